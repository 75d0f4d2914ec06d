"""Evaluate LLM answers to IAMM_large instructions: emotion accuracy (strict and lenient), Dist-1/2, coverage.

Predictions are a JSONL file with one record per sample: `id` (the instruction row's id) and the raw answer text
under `output` (or `answer`). Both `scripts/prompt_openai.py` (whose records also carry `status`: records with
`"failed"` count as missing) and a fine-tuned model's generation script write this; a `{"__header__": ...}` first
line is skipped, and when an id occurs twice, its last record counts. Gold labels come from the instruction data
set (`emotion` column).

Metrics (x100), over all samples of the split unless said otherwise; a sample without a prediction counts as wrong:

* `emotion_accuracy_strict`: the label read from the answer's `Emotion:` field (:func:`parse_answer`, exact match
  or unique lenient containment) equals the gold label;
* `emotion_accuracy_lenient`: the gold label appears as a substring anywhere in the answer, case-insensitively --
  how the IAMM_large authors counted (and what the paper's Table 3 reports). It over-counts: an answer naming
  several labels hits each of them, and `content` matches inside `discontent`;
* `*_answered`: the same over the samples that have a prediction;
* `dist1`/`dist2`: corpus-level distinct n-grams of the parsed responses of the answered samples
  (:func:`modeling_iamm.metrics.distinct_n`, the project's word tokenisation);
* `valid_label`: answered samples whose `Emotion:` field is exactly one of the 32 labels.
"""

import json
import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from modeling_iamm import EMOTION_LABELS
from modeling_iamm.metrics import distinct_n

from .instructions import parse_answer
from .records import read_jsonl

logger = logging.getLogger(__name__)

TEXT_KEYS = ("output", "answer")

PAPER_TABLE3: List[Tuple[str, float, float, float]] = [
    ("paper: IAMM_large, ChatGLM3-6B LoRA with associations", 62.6, 3.55, 21.7),
    ("paper: ChatGLM3-6B LoRA without associations", 62.16, 3.51, 21.56),
    ("paper: GPT-3.5 with associations", 38.51, 3.63, 22.13),
    ("paper: GPT-3.5 plain prompt", 37.9, 3.58, 21.38),
]
"""Yang et al. (ACL 2024), Table 3, test split: (row, lenient accuracy, Dist-1, Dist-2), all x100."""

MANY_LABELS = 8  # an answer naming this many different labels probably contains the instruction's label list


def load_predictions(path: str) -> Tuple[Dict[str, str], Dict[str, str]]:
    """The answer text of each sample id, and the last error of each id whose newest record failed.

    Raises `ValueError` naming the record when one has no `id` or no text under `output`/`answer`.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such predictions file")
    _, records = read_jsonl(path)
    if not records:
        raise ValueError(f"{path}: no prediction records (only a header, or empty)")
    answers: Dict[str, str] = {}
    failed: Dict[str, str] = {}
    for number, record in enumerate(records, start=1):
        if "id" not in record:
            raise ValueError(f"{path}, record {number}: no 'id' (keys: {sorted(record)})")
        sample = str(record["id"])
        if record.get("status") == "failed":
            failed[sample] = record.get("error", "failed")
            answers.pop(sample, None)
            continue
        text = next((record[k] for k in TEXT_KEYS if isinstance(record.get(k), str)), None)
        if text is None:
            raise ValueError(f"{path}, record {number} ({sample}): no answer text under {' or '.join(TEXT_KEYS)}")
        answers[sample] = text
        failed.pop(sample, None)
    return answers, failed


def evaluate_answers(answers: Mapping[str, str], gold: Sequence[Mapping[str, Any]],
                     failed: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Metrics of `answers` (id -> raw text) against gold rows (`id`, `emotion`); see the module docstring."""
    if not gold:
        raise ValueError("no gold samples")
    gold_ids = {row["id"] for row in gold}
    unknown = [i for i in answers if i not in gold_ids]
    if answers and len(unknown) == len(answers):
        raise ValueError(f"none of the {len(answers)} predictions matches an id of the gold split (e.g. {unknown[0]!r}): "
                         "wrong split or wrong instruction data set?")
    strict = lenient = valid = many_labels = 0
    responses: List[str] = []
    for row in gold:
        text = answers.get(row["id"])
        if text is None:
            continue
        parsed = parse_answer(text)
        label = row["emotion"]
        lowered = text.lower()
        strict += parsed.emotion == label
        lenient += label.lower() in lowered
        valid += parsed.valid_label
        many_labels += sum(lab in lowered for lab in EMOTION_LABELS) >= MANY_LABELS
        responses.append(parsed.response)
    n, answered = len(gold), len(responses)
    if many_labels:
        logger.warning("%d answers name %d or more emotion labels: do they contain the instruction's label list? "
                       "Lenient accuracy counts them as hits", many_labels, MANY_LABELS)
    per_answered = (lambda hits: 100 * hits / answered if answered else 0.0)
    return {
        "samples": n,
        "answered": answered,
        "missing": n - answered,
        "failed": sum(1 for i in (failed or {}) if i in gold_ids),
        "unknown_ids": len(unknown),
        "emotion_accuracy_strict_x100": 100 * strict / n,
        "emotion_accuracy_lenient_x100": 100 * lenient / n,
        "emotion_accuracy_strict_answered_x100": per_answered(strict),
        "emotion_accuracy_lenient_answered_x100": per_answered(lenient),
        "valid_label_x100": per_answered(valid),
        "answers_naming_many_labels": many_labels,
        "dist1_x100": 100 * distinct_n(responses, 1),
        "dist2_x100": 100 * distinct_n(responses, 2),
    }


def comparison_table(metrics: Mapping[str, Any], name: str = "this run") -> str:
    """A Markdown table of this run beside the paper's Table 3 rows (lenient accuracy is the comparable one)."""
    lines = ["| run | Acc lenient | Acc strict | Dist-1 | Dist-2 |", "| --- | ---: | ---: | ---: | ---: |"]
    for row, acc, d1, d2 in PAPER_TABLE3:
        lines.append(f"| {row} | {acc:.2f} | - | {d1:.2f} | {d2:.2f} |")
    lines.append(f"| {name} ({metrics['answered']}/{metrics['samples']} answered) | "
                 f"{metrics['emotion_accuracy_lenient_x100']:.2f} | {metrics['emotion_accuracy_strict_x100']:.2f} | "
                 f"{metrics['dist1_x100']:.2f} | {metrics['dist2_x100']:.2f} |")
    return "\n".join(lines)


def evaluate_predictions_file(predictions_file: str, gold: Sequence[Mapping[str, Any]],
                              output_file: Optional[str] = None, extra: Optional[Dict[str, Any]] = None
                              ) -> Dict[str, Any]:
    """Load predictions, compute the metrics against `gold`, and write them as JSON to `output_file` (if given)."""
    answers, failed = load_predictions(predictions_file)
    metrics = {"predictions": predictions_file, **(extra or {}), **evaluate_answers(answers, gold, failed)}
    if output_file:
        with open(output_file, "w") as f:
            json.dump(metrics, f, indent=2)
    return metrics
