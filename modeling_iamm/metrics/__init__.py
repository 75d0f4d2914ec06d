"""IAMM's evaluation metrics, as the paper reports them (Sec. 4; x100 except perplexity).

* emotion accuracy: per sample (not averaged per batch, as the authors' script did);
* perplexity, two estimators, both reported and labelled: `ppl_paper` = exp(mean over samples of each sample's
  mean token NLL) (the paper's), `ppl_corpus` = exp(total NLL / total tokens) (the usual corpus estimate);
* Dist-n: corpus-level distinct n-grams / all n-grams over the generated responses, split into words by
  :func:`modeling_iamm.text.word_tokenize` (the tokenisation the model uses; no "Greedy:" prefix stripping that
  eats leading letters, as the authors' script did).

The same functions are shipped as `evaluate` metric modules, loadable by path (Hub-hosted metrics cannot be fetched
offline): `evaluate.load(modeling_iamm.metrics.metric_path("iamm_distinct"))`, also `"iamm_perplexity"` and
`"iamm_emotion_accuracy"`.
"""

import math
import os
from collections import Counter
from typing import Dict, Iterable, List, Sequence, Union

from ..text import word_tokenize

METRIC_MODULES = ("iamm_distinct", "iamm_perplexity", "iamm_emotion_accuracy")


def metric_path(name: str) -> str:
    """Folder of a shipped `evaluate` metric module (pass it to `evaluate.load`)."""
    if name not in METRIC_MODULES:
        raise ValueError(f"unknown metric {name!r}; shipped: {', '.join(METRIC_MODULES)}")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), name)


def emotion_accuracy(predictions: Sequence[Union[str, int]], references: Sequence[Union[str, int]]) -> float:
    """Fraction of samples whose predicted emotion equals the gold one (exact match, per sample)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError("no samples")
    return sum(p == r for p, r in zip(predictions, references)) / len(references)


def perplexities(nll_sums: Sequence[float], token_counts: Sequence[int]) -> Dict[str, float]:
    """Both perplexity estimators from each sample's summed token NLL (natural log) and its token count.

    Returns `{"ppl_paper": exp(mean_i(nll_i / n_i)), "ppl_corpus": exp(sum_i nll_i / sum_i n_i)}`.
    """
    if len(nll_sums) != len(token_counts) or not nll_sums:
        raise ValueError("need one token count per sample, and at least one sample")
    if any(n <= 0 for n in token_counts):
        raise ValueError("every sample needs at least one target token")
    per_sample = [s / n for s, n in zip(nll_sums, token_counts)]
    return {
        "ppl_paper": math.exp(sum(per_sample) / len(per_sample)),
        "ppl_corpus": math.exp(sum(nll_sums) / sum(token_counts)),
    }


def distinct_n(responses: Iterable[str], n: int) -> float:
    """Corpus-level Dist-n: distinct n-grams / total n-grams over all responses (0.0 when there are none)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    counts: Counter = Counter()
    for response in responses:
        words = word_tokenize(response)
        counts.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def first_response(response: Union[str, Sequence[str]]) -> str:
    """The response a metric counts: `response` itself, or the first of a list of returned sequences."""
    if isinstance(response, str):
        return response
    return response[0] if len(response) else ""


def compute_metrics(records: List[dict]) -> Dict[str, float]:
    """The paper's table row from evaluation records (`predicted_emotion`, `gold_emotion`, `generated_response`,
    `nll_sum`, `n_tokens`): accuracy, Dist-1/2 x100, both perplexities.

    A record with several responses (`generated_response` a list, from `num_return_sequences > 1`) counts its
    first one (the best beam, or the first sample) in Dist-n, so that every sample weighs the same."""
    ppl = perplexities([r["nll_sum"] for r in records], [r["n_tokens"] for r in records])
    responses = [first_response(r["generated_response"]) for r in records]
    return {
        "samples": len(records),
        "emotion_accuracy_x100": 100 * emotion_accuracy([r["predicted_emotion"] for r in records],
                                                        [r["gold_emotion"] for r in records]),
        "ppl_paper": ppl["ppl_paper"],
        "ppl_corpus": ppl["ppl_corpus"],
        "dist1_x100": 100 * distinct_n(responses, 1),
        "dist2_x100": 100 * distinct_n(responses, 2),
    }
