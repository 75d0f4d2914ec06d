"""A trivial emotion baseline for the results table: TF-IDF (word 1-2 grams) + logistic regression.

One sample per listener turn, trained on the train split. Needs scikit-learn (`pip install iamm[analysis]`).
"""

from typing import Dict, List, Sequence

from datasets import Dataset

from .text import word_tokenize

INPUTS = {
    "situation+context": lambda s: s["situation"] + " " + " ".join(s["context"]),
    "situation": lambda s: s["situation"],
    "context": lambda s: " ".join(s["context"]),
}


def _texts(samples: Dataset, inputs: str) -> List[str]:
    text_of = INPUTS[inputs]
    return [text_of({"situation": sit, "context": ctx}) for sit, ctx in zip(samples["situation"], samples["context"])]


def tfidf_emotion_accuracy(train: Dataset, evaluation: Dataset, inputs: Sequence[str] = tuple(INPUTS),
                           C: float = 10.0, min_df: int = 2, seed: int = 0) -> Dict[str, float]:
    """Accuracy (fraction) of TF-IDF + logistic regression on `evaluation`, for each input choice."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    results = {}
    for name in inputs:
        if name not in INPUTS:
            raise ValueError(f"unknown input {name!r}; choose from {list(INPUTS)}")
        vectorizer = TfidfVectorizer(tokenizer=word_tokenize, lowercase=False, token_pattern=None, ngram_range=(1, 2),
                                     min_df=min_df, sublinear_tf=True)
        x_train = vectorizer.fit_transform(_texts(train, name))
        classifier = LogisticRegression(C=C, max_iter=2000, random_state=seed)
        classifier.fit(x_train, train["emotion"])
        predictions = classifier.predict(vectorizer.transform(_texts(evaluation, name)))
        gold = evaluation["emotion"]
        results[name] = sum(p == g for p, g in zip(predictions, gold)) / len(gold)
    return results
