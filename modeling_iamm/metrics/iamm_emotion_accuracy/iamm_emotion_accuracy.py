"""Emotion accuracy per sample (exact label match), as IAMM reports it (a fraction; x100 in tables)."""

import datasets
import evaluate

from modeling_iamm.metrics import emotion_accuracy

_DESCRIPTION = "Fraction of samples whose predicted emotion label equals the gold label."
_KWARGS = "predictions (list of str): predicted labels; references (list of str): gold labels."


class IammEmotionAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
                                   features=datasets.Features({"predictions": datasets.Value("string"),
                                                               "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        return {"accuracy": emotion_accuracy(predictions, references)}
