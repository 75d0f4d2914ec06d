"""Corpus-level Dist-n (distinct n-grams / all n-grams) over responses, as IAMM reports it (a fraction; x100 in tables)."""

import datasets
import evaluate

from modeling_iamm.metrics import distinct_n

_DESCRIPTION = "Corpus-level Dist-1 and Dist-2 over word-tokenised responses (modeling_iamm.text.word_tokenize)."
_KWARGS = "predictions (list of str): generated responses. Returns {'distinct_1': float, 'distinct_2': float}."


class IammDistinct(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
                                   features=datasets.Features({"predictions": datasets.Value("string")}))

    def _compute(self, predictions):
        return {"distinct_1": distinct_n(predictions, 1), "distinct_2": distinct_n(predictions, 2)}
