"""The TF-IDF baseline's probabilities, a model's emotion heads as log-probabilities, and their combination."""

import pytest
import torch

from modeling_iamm import IAMMDataCollator
from modeling_iamm.baselines import _fit, _texts, combined_accuracy, tfidf_emotion_accuracy, tfidf_emotion_log_probs
from modeling_iamm.configuration_iamm import EMOTION_LABELS
from modeling_iamm.diagnostics import emotion_log_probs
from tests.helpers.tiny_model import IAMMModelTester

pytest.importorskip("sklearn")


def test_baseline_log_probs_are_in_the_model_emotion_order(sample_samples):
    train, valid = sample_samples["train"], sample_samples["valid"]
    log_probs = tfidf_emotion_log_probs(train, valid, "situation+context", min_df=1)
    assert log_probs.shape == (len(valid), len(EMOTION_LABELS))
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(len(valid)))
    # the argmax names the classifier's own prediction (sklearn's predict, in its own label order)
    vectorizer, classifier = _fit(train, "situation+context", C=10.0, min_df=1, seed=0)
    expected = list(classifier.predict(vectorizer.transform(_texts(valid, "situation+context"))))
    assert [EMOTION_LABELS[i] for i in log_probs.argmax(-1).tolist()] == expected
    accuracy = sum(p == g for p, g in zip(expected, valid["emotion"])) / len(valid)
    assert accuracy > 2 / len(EMOTION_LABELS)  # well above chance here
    assert tfidf_emotion_accuracy(train, valid, ["situation+context"], min_df=1)["situation+context"] == pytest.approx(
        accuracy)


def test_an_emotion_absent_from_train_gets_minus_infinity_and_combines_without_nan(sample_samples):
    train, valid = sample_samples["train"], sample_samples["valid"]
    absent = EMOTION_LABELS.index("surprised")
    assert "surprised" in train["emotion"]
    log_probs = tfidf_emotion_log_probs(train.filter(lambda s: s["emotion"] != "surprised"), valid, min_df=1)
    assert torch.isneginf(log_probs[:, absent]).all()
    assert torch.isfinite(log_probs[:, [i for i in range(len(EMOTION_LABELS)) if i != absent]]).all()
    model = torch.full_like(log_probs, float("-inf"))  # a model sure of nothing but one emotion: -inf + -inf
    model[:, absent] = 0.0
    combined = model + log_probs
    assert not torch.isnan(combined).any()
    labels = torch.tensor([EMOTION_LABELS.index(e) for e in valid["emotion"]])
    assert set(combined_accuracy({"product": model}, log_probs, labels)) == {"baseline", "product", "product+baseline"}


def test_combined_accuracy_multiplies_the_distributions():
    labels = torch.tensor([0, 1])
    model = torch.tensor([[0.6, 0.4], [0.6, 0.4]]).log()
    baseline = torch.tensor([[0.45, 0.55], [0.2, 0.8]]).log()
    # products: 0.27 / 0.22 (right), 0.12 / 0.32 (right); each alone is right once
    assert combined_accuracy({"product": model}, baseline, labels) == {
        "baseline": 50.0, "product": 50.0, "product+baseline": 100.0}


def test_emotion_log_probs_are_the_heads_of_the_forward(sample_samples, word_tokenizer):
    model = IAMMModelTester().create_model(vocab_size=len(word_tokenizer), use_implicit_association=False).eval()
    collator = IAMMDataCollator(word_tokenizer)
    samples = [sample_samples["train"][i] for i in range(7)]
    got = emotion_log_probs(model, collator, samples, batch_size=3)
    batch = collator(samples)
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
    assert torch.equal(got["labels"], batch["emotion_labels"])
    heads = {h for h in ("context", "situation", "memory", "knowledge") if getattr(out, f"{h}_emotion_logits") is not None}
    assert set(got) == {"product", "labels"} | heads and len(heads) == 3  # context, situation, memory
    torch.testing.assert_close(got["product"], torch.log_softmax(out.emotion_logits, -1))
    for head in heads:
        torch.testing.assert_close(got[head], torch.log_softmax(getattr(out, f"{head}_emotion_logits"), -1))


def test_ngram_max_one_is_a_bag_of_words(sample_samples):
    words, _ = _fit(sample_samples["train"], "situation", C=1.0, min_df=1, seed=0, ngram_max=1)
    grams, _ = _fit(sample_samples["train"], "situation", C=1.0, min_df=1, seed=0, ngram_max=2)
    assert not any(" " in f for f in words.vocabulary_) and any(" " in f for f in grams.vocabulary_)
