"""Metrics on hand-computed examples, and the shipped `evaluate` modules."""

import math

import evaluate
import pytest

from modeling_iamm.metrics import compute_metrics, distinct_n, emotion_accuracy, metric_path, perplexities


def test_distinct_n_by_hand():
    responses = ["yes i did", "did you ?", "yes yes"]
    # words: yes i did | did you ? | yes yes -> 8 unigrams, 5 distinct; bigrams: 2 + 2 + 1 = 5, distinct 5
    assert distinct_n(responses, 1) == 5 / 8
    assert distinct_n(responses, 2) == 5 / 5
    # the authors' "Greedy:" strip ate leading letters of responses like these: here they are counted whole
    assert distinct_n(["yes", "did"], 1) == 1.0 and distinct_n(["yes", "yes"], 1) == 0.5
    assert distinct_n(["", "  "], 1) == 0.0  # empty responses have no n-grams
    assert distinct_n(["", "oh no"], 2) == 1.0
    assert distinct_n(["I don't"], 1) == 1.0 and distinct_n(["I don't know", "i do not"], 1) == 4 / 7
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_perplexities_both_estimators_by_hand():
    # sample 1: 1 token, NLL 3; sample 2: 3 tokens, NLL 3 -> per-sample means 3 and 1
    ppl = perplexities([3.0, 3.0], [1, 3])
    assert math.isclose(ppl["ppl_paper"], math.exp((3 + 1) / 2))  # the paper's: mean of per-sample means
    assert math.isclose(ppl["ppl_corpus"], math.exp(6 / 4))  # corpus: total NLL / total tokens
    with pytest.raises(ValueError, match="at least one target token"):
        perplexities([1.0], [0])


def test_accuracy_is_per_sample():
    assert emotion_accuracy(["sad", "sad", "joyful"], ["sad", "proud", "joyful"]) == 2 / 3
    with pytest.raises(ValueError):
        emotion_accuracy(["sad"], [])


def test_compute_metrics_row():
    records = [
        {"predicted_emotion": "sad", "gold_emotion": "sad", "generated_response": "yes i did", "nll_sum": 2.0, "n_tokens": 2},
        {"predicted_emotion": "sad", "gold_emotion": "proud", "generated_response": "did you ?", "nll_sum": 4.0, "n_tokens": 2},
    ]
    m = compute_metrics(records)
    assert m["emotion_accuracy_x100"] == 50.0 and math.isclose(m["dist1_x100"], 100 * 5 / 6) and m["dist2_x100"] == 100.0
    assert math.isclose(m["ppl_paper"], math.exp(1.5)) and math.isclose(m["ppl_corpus"], math.exp(1.5))


def test_shipped_evaluate_modules_load_by_path():
    distinct = evaluate.load(metric_path("iamm_distinct"))
    assert distinct.compute(predictions=["yes i did", "did you ?", "yes yes"]) == {"distinct_1": 5 / 8, "distinct_2": 1.0}
    ppl = evaluate.load(metric_path("iamm_perplexity")).compute(nll_sums=[3.0, 3.0], token_counts=[1, 3])
    assert math.isclose(ppl["ppl_paper"], math.exp(2)) and math.isclose(ppl["ppl_corpus"], math.exp(1.5))
    acc = evaluate.load(metric_path("iamm_emotion_accuracy"))
    assert acc.compute(predictions=["sad", "joyful"], references=["sad", "proud"]) == {"accuracy": 0.5}
    with pytest.raises(ValueError, match="unknown metric"):
        metric_path("bleu")
