"""A trivial emotion baseline for the results table: TF-IDF (word 1-2 grams by default) + logistic regression.

One sample per listener turn, trained on the train split. Needs scikit-learn (`pip install iamm[analysis]`).

`combined_accuracy` measures how much a trained IAMM adds to that baseline: the accuracy of the product of the
baseline's probabilities with each emotion head's (and with the model's product of heads), weighted 1:1, nothing
tuned on the evaluated split.
"""

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch
from datasets import Dataset

from .configuration_iamm import EMOTION_LABELS
from .text import word_tokenize

INPUTS = {
    "situation+context": lambda s: s["situation"] + " " + " ".join(s["context"]),
    "situation": lambda s: s["situation"],
    "context": lambda s: " ".join(s["context"]),
}


def _texts(samples: Dataset, inputs: str) -> List[str]:
    text_of = INPUTS[inputs]
    return [text_of({"situation": sit, "context": ctx}) for sit, ctx in zip(samples["situation"], samples["context"])]


def _fit(train: Dataset, inputs: str, C: float, min_df: int, seed: int, ngram_max: int = 2) -> Tuple[Any, Any]:
    """The fitted `(TfidfVectorizer, LogisticRegression)` on `train`'s `inputs` texts and emotions."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if inputs not in INPUTS:
        raise ValueError(f"unknown input {inputs!r}; choose from {list(INPUTS)}")
    vectorizer = TfidfVectorizer(tokenizer=word_tokenize, lowercase=False, token_pattern=None, ngram_range=(1, ngram_max),
                                 min_df=min_df, sublinear_tf=True)
    classifier = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    classifier.fit(vectorizer.fit_transform(_texts(train, inputs)), train["emotion"])
    return vectorizer, classifier


def tfidf_emotion_accuracy(train: Dataset, evaluation: Dataset, inputs: Sequence[str] = tuple(INPUTS),
                           C: float = 10.0, min_df: int = 2, seed: int = 0, ngram_max: int = 2) -> Dict[str, float]:
    """Accuracy (fraction) of TF-IDF (word n-grams up to `ngram_max`) + logistic regression on `evaluation`, for
    each input choice."""
    labels = emotion_ids(evaluation)
    return {name: emotion_accuracy(tfidf_emotion_log_probs(train, evaluation, name, C, min_df, seed, ngram_max), labels)
            for name in inputs}


def emotion_ids(samples: Dataset) -> torch.Tensor:
    """The samples' gold emotions as ids in the model's order (`EMOTION_LABELS`), `(N,)`."""
    return torch.tensor([EMOTION_LABELS.index(label) for label in samples["emotion"]])


def emotion_accuracy(log_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy (fraction) of the argmax of `log_probs (N, n_emotions)` against `labels (N,)`."""
    return (log_probs.argmax(-1) == labels).float().mean().item()


def tfidf_emotion_log_probs(train: Dataset, evaluation: Dataset, inputs: str = "situation+context",
                            C: float = 10.0, min_df: int = 2, seed: int = 0, ngram_max: int = 2) -> torch.Tensor:
    """The baseline's log-probabilities on `evaluation`, `(N, 32)` in the model's emotion order (`EMOTION_LABELS`);
    an emotion absent from `train` gets -inf."""
    vectorizer, classifier = _fit(train, inputs, C, min_df, seed, ngram_max)
    fitted = torch.from_numpy(classifier.predict_log_proba(vectorizer.transform(_texts(evaluation, inputs)))).float()
    log_probs = torch.full((fitted.shape[0], len(EMOTION_LABELS)), float("-inf"))
    columns = [EMOTION_LABELS.index(label) for label in classifier.classes_]
    log_probs[:, columns] = fitted
    return log_probs


def combined_accuracy(model_log_probs: Mapping[str, torch.Tensor], baseline_log_probs: torch.Tensor,
                      labels: torch.Tensor) -> Dict[str, float]:
    """Accuracy x100 of each of the model's distributions alone (`<name>`) and multiplied 1:1 with the baseline's
    (`<name>+baseline`); `baseline` alone too. All `(N, n_emotions)` log-probabilities; `labels (N,)` emotion ids."""
    def accuracy_x100(log_probs: torch.Tensor) -> float:
        return round(100 * emotion_accuracy(log_probs, labels), 2)

    results = {"baseline": accuracy_x100(baseline_log_probs)}
    for name, log_probs in model_log_probs.items():
        results[name] = accuracy_x100(log_probs)
        results[f"{name}+baseline"] = accuracy_x100(log_probs + baseline_log_probs)
    return results
