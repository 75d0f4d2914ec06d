"""Perplexity from per-sample summed NLL and token counts, with both estimators (paper's and corpus)."""

import datasets
import evaluate

from modeling_iamm.metrics import perplexities

_DESCRIPTION = ("ppl_paper = exp(mean over samples of each sample's mean token NLL) (the IAMM paper's estimator); "
                "ppl_corpus = exp(total NLL / total tokens).")
_KWARGS = "nll_sums (list of float): each sample's summed token NLL; token_counts (list of int): its token count."


class IammPerplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
                                   features=datasets.Features({"nll_sums": datasets.Value("float64"),
                                                               "token_counts": datasets.Value("int64")}))

    def _compute(self, nll_sums, token_counts):
        return perplexities(nll_sums, token_counts)
