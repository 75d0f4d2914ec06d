"""Evaluate LLM answers to IAMM_large instructions: emotion accuracy by three rules, Dist-1/2, coverage.

Predictions are a JSONL file with one record per sample: `id` (the instruction row's id) and the raw answer text
under `output` (or `answer`). Both `scripts/prompt_openai.py` (whose records also carry `status`: records with
`"failed"` count as missing) and a fine-tuned model's generation script write this; a `{"__header__": ...}` first
line is skipped, and when an id occurs twice, its last record counts. Gold labels come from the instruction data
set (`emotion` column). The IAMM_large authors' own predictions file (`generated_predictions.jsonl`: `label` and
`predict` per line, no ids) is read too (:func:`load_authors_predictions`): its gold labels come from `label`.

Metrics (x100), over all samples of the split unless said otherwise; a sample without a prediction counts as wrong:

* `emotion_accuracy_paper_x100` -- **the one comparable to the paper's Table 3**, the IAMM_large authors' rule
  (:func:`paper_fields`): the answer's emotion text is what comes before its first `"\n "` (newline + space,
  their answer format), with `Emotion:` removed; a hit is the gold label as a substring of it, case-insensitively.
  Text after the emotion line is never searched; `content` still matches inside `discontent`. The rule assumes
  their answer format (`Emotion:<label>\n Response:<reply>`, :mod:`iamm.llm.instructions` with
  `format="authors"`). Chat models often write `"Emotion: sad\nResponse: ..."` (no space after the newline,
  as OpenAI models do): an answer without `"\n "` that has a line starting with `Response:` is read as if it
  had the separator there (:func:`with_paper_separator`: `"\n "` replaces the newline before its first
  `Response:` line), so its emotion text ends at that line and its response is that line; the metrics count them
  (`answers_split_at_response_line`), a warning says so and the printed table names it. Any other answer without
  `"\n "` is searched whole and has no response (`answers_without_paper_separator` counts all answers without
  the separator as written);
* `emotion_accuracy_strict_x100`: the answer's `Emotion:` field (:func:`~iamm.llm.instructions.strict_label`) is
  exactly the gold label after a fixed normalisation: Unicode NFKC, markdown bold removed, lower case, and
  surrounding white space, quotes, backticks, brackets, asterisks and punctuation trimmed (`"**Emotion**: Sad."`
  is `sad`). Anything else is no label: no `Emotion:` field, `"Emotion: not sad, just tired"`,
  `"Emotion: Sadness"`, two labels;
* `emotion_accuracy_lenient_x100`: the gold label is a substring of the WHOLE answer (response included),
  case-insensitively. Not the paper's rule: it over-counts (an answer naming several labels hits each of them;
  an instruction's label list echoed back hits every one);
* `*_answered`: the same over the samples that have a prediction;
* `dist1_paper_x100`/`dist2_paper_x100` -- **comparable to Table 3**: corpus-level distinct n-grams of the
  authors' response text (:func:`paper_fields`: the second `"\n "`-separated piece with `Response:` removed, empty
  when there is none; after :func:`with_paper_separator`) over the answered samples, split into words as NLTK
  3.8.1's `word_tokenize` does with its English sentence model, as their Dist code did
  (:func:`iamm.llm.treebank.treebank_word_tokenize`); `paper_responses` counts the non-empty responses (with none,
  the table prints `n/a`, not a Dist of 0);
* `dist1_x100`/`dist2_x100`: the same over the responses :func:`parse_answer` reads (everything after the first
  `Response:`), split by the project's word tokenisation (:func:`modeling_iamm.metrics.distinct_n`), as IAMM's own
  Dist is computed;
* `valid_label`: answered samples whose `Emotion:` field is exactly one of the 32 labels (strict normalisation).
"""

import json
import logging
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from modeling_iamm import EMOTION_LABELS
from modeling_iamm.metrics import distinct_n

from .instructions import parse_answer, strict_label
from .records import read_jsonl
from .treebank import treebank_word_tokenize

logger = logging.getLogger(__name__)

TEXT_KEYS = ("output", "answer")

PAPER_TABLE3: List[Tuple[str, float, float, float]] = [
    ("paper: IAMM_large, ChatGLM3-6B LoRA with associations", 62.6, 3.55, 21.7),
    ("paper: ChatGLM3-6B LoRA without associations", 62.16, 3.51, 21.56),
    ("paper: GPT-3.5 with associations", 38.51, 3.63, 22.13),
    ("paper: GPT-3.5 plain prompt", 37.9, 3.58, 21.38),
]
"""Yang et al. (ACL 2024), Table 3, test split: (row, accuracy, Dist-1, Dist-2), all x100, scored by the authors'
rule (`emotion_accuracy_paper_x100`, `dist1_paper_x100`, `dist2_paper_x100` here)."""

AUTHORS_LABEL_PREFIX = "[gMASK]sop Emotion:"
"""How the gold `label` of the authors' `generated_predictions.jsonl` starts (the decoded target with its prefix)."""
ANSWER_SEPARATOR = "\n "
"""What separates the emotion line from the response in the authors' answer format (newline, space)."""


def paper_fields(answer: str) -> Tuple[str, str]:
    """The emotion text and the response text of an answer by the IAMM_large authors' scoring rule.

    The answer is split at every `"\n "`; the emotion text is the first piece with every `Emotion:` removed, the
    response the second piece with every `Response:` removed (later pieces are dropped; no second piece -> `""`).
    Nothing is stripped or lower-cased.
    """
    pieces = answer.split(ANSWER_SEPARATOR)
    response = pieces[1].replace("Response:", "") if len(pieces) > 1 else ""
    return pieces[0].replace("Emotion:", ""), response


RESPONSE_LINE = re.compile(r"\n(?=Response:)")
"""The newline before a line starting with `Response:` (the answer format of chat models without the space)."""


def with_paper_separator(answer: str) -> Tuple[str, bool]:
    """`answer` ready for the authors' rule, and whether it was changed: an answer without their `"\n "` separator
    but with a line starting with `Response:` gets the separator at the newline before the first such line
    (`"Emotion: sad\nResponse: ok"` -> `"Emotion: sad\n Response: ok"`); any other answer is returned as is."""
    if ANSWER_SEPARATOR in answer:
        return answer, False
    fixed, count = RESPONSE_LINE.subn(ANSWER_SEPARATOR, answer, count=1)
    return fixed, bool(count)


def paper_emotion_hit(answer: str, label: str) -> bool:
    """Whether `answer` counts as naming `label` by the authors' rule: the label, lower-cased, is a substring of the
    lower-cased emotion text of :func:`paper_fields`."""
    return label.lower() in paper_fields(answer)[0].lower()


def paper_distinct_n(responses: Sequence[str], n: int) -> float:
    """Corpus-level Dist-n as the authors computed it: distinct n-grams / all n-grams over the responses split by
    :func:`~iamm.llm.treebank.treebank_word_tokenize` (0.0 when there are none)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(words[i: i + n]) for words in map(treebank_word_tokenize, responses)
             for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0

MANY_LABELS = 8  # an answer naming this many different labels probably contains the instruction's label list


def _records(path: str) -> List[Dict[str, Any]]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such predictions file")
    _, records = read_jsonl(path)
    if not records:
        raise ValueError(f"{path}: no prediction records (only a header, or empty)")
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise ValueError(f"{path}, record {number}: not a JSON object ({type(record).__name__})")
    return records


def _read_all_lines(path: str) -> List[Any]:
    """Every non-blank line of a finished JSONL file (the last one may lack its newline), parsed."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such predictions file")
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {lineno}: not a JSON record ({e.msg})") from None
    if not records:
        raise ValueError(f"{path}: no prediction records (empty)")
    return records


def is_authors_predictions(path: str) -> bool:
    """Whether `path` is in the IAMM_large authors' format (`label` and `predict` per line, no `id`)."""
    first = _read_all_lines(path)[0]
    return isinstance(first, dict) and "id" not in first and {"label", "predict"} <= set(first)


def load_authors_predictions(path: str) -> Tuple[Dict[str, str], List[Dict[str, str]]]:
    """The answers and gold rows of a predictions file in the authors' format (their `generated_predictions.jsonl`).

    Samples are numbered by record (`"1"`, `"2"`, ...); the gold label is the `label` text before its first `"\n "`
    with the `[gMASK]sop Emotion:` prefix removed, as their scorer reads it. The file is a finished one: its last
    line counts without a newline (their file has none).
    """
    answers: Dict[str, str] = {}
    gold: List[Dict[str, str]] = []
    for number, record in enumerate(_read_all_lines(path), start=1):
        label = record.get("label") if isinstance(record, dict) else None
        predict = record.get("predict") if isinstance(record, dict) else None
        if not isinstance(label, str) or not isinstance(predict, str):
            raise ValueError(f"{path}, record {number}: needs the strings 'label' and 'predict'")
        answers[str(number)] = predict
        gold.append({"id": str(number), "emotion": label.split(ANSWER_SEPARATOR)[0].replace(AUTHORS_LABEL_PREFIX, "")})
    return answers, gold


def load_predictions(path: str) -> Tuple[Dict[str, str], Dict[str, str]]:
    """The answer text of each sample id, and the last error of each id whose newest record failed.

    Raises `ValueError` naming the record when one is not a JSON object, has no `id` or no text under
    `output`/`answer`.
    """
    answers: Dict[str, str] = {}
    failed: Dict[str, str] = {}
    for number, record in enumerate(_records(path), start=1):
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
    strict = paper = lenient = valid = many_labels = no_separator = split_at_response = 0
    responses: List[str] = []
    paper_responses: List[str] = []
    for row in gold:
        text = answers.get(row["id"])
        if text is None:
            continue
        parsed = parse_answer(text)
        label = row["emotion"]
        lowered = text.lower()
        exact = strict_label(text)
        strict += exact is not None and exact == label.strip().lower()
        paper_text, split = with_paper_separator(text)
        split_at_response += split
        paper += paper_emotion_hit(paper_text, label)
        lenient += label.lower() in lowered
        valid += exact is not None
        many_labels += sum(lab in lowered for lab in EMOTION_LABELS) >= MANY_LABELS
        no_separator += ANSWER_SEPARATOR not in text
        responses.append(parsed.response)
        paper_responses.append(paper_fields(paper_text)[1])
    n, answered = len(gold), len(responses)
    if many_labels:
        logger.warning("%d answers name %d or more emotion labels: do they contain the instruction's label list? "
                       "Lenient accuracy counts them as hits", many_labels, MANY_LABELS)
    if split_at_response:
        logger.warning("%d of %d answers have no %r between emotion and response (the authors' answer format) but a "
                       "'Response:' line: the paper rule reads them split before that line", split_at_response,
                       answered, ANSWER_SEPARATOR)
    if no_separator - split_at_response:
        logger.warning("%d of %d answers have neither %r between emotion and response (the authors' answer format) "
                       "nor a 'Response:' line: the paper rule searches them whole and gives them an empty response",
                       no_separator - split_at_response, answered, ANSWER_SEPARATOR)
    per_answered = (lambda hits: 100 * hits / answered if answered else 0.0)
    return {
        "samples": n,
        "answered": answered,
        "missing": n - answered,
        "failed": sum(1 for i in (failed or {}) if i in gold_ids),
        "unknown_ids": len(unknown),
        "emotion_accuracy_paper_x100": 100 * paper / n,
        "emotion_accuracy_strict_x100": 100 * strict / n,
        "emotion_accuracy_lenient_x100": 100 * lenient / n,
        "emotion_accuracy_paper_answered_x100": per_answered(paper),
        "emotion_accuracy_strict_answered_x100": per_answered(strict),
        "emotion_accuracy_lenient_answered_x100": per_answered(lenient),
        "valid_label_x100": per_answered(valid),
        "answers_naming_many_labels": many_labels,
        "answers_without_paper_separator": no_separator,
        "answers_split_at_response_line": split_at_response,
        "paper_responses": sum(1 for r in paper_responses if r.strip()),
        "dist1_paper_x100": 100 * paper_distinct_n(paper_responses, 1),
        "dist2_paper_x100": 100 * paper_distinct_n(paper_responses, 2),
        "dist1_x100": 100 * distinct_n(responses, 1),
        "dist2_x100": 100 * distinct_n(responses, 2),
    }


def comparison_table(metrics: Mapping[str, Any], name: str = "this run") -> str:
    """A Markdown table of this run beside the paper's Table 3 rows.

    The first three numeric columns are scored by the authors' rule (comparable to Table 3); strict and lenient
    accuracy follow for this run only. The run's row says how many answers were split at their `Response:` line
    (:func:`with_paper_separator`); its Dist columns say `n/a` when the rule found no response at all.
    """
    lines = ["| run | Acc (paper rule) | Dist-1 (paper rule) | Dist-2 (paper rule) | Acc strict | Acc lenient |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row, acc, d1, d2 in PAPER_TABLE3:
        lines.append(f"| {row} | {acc:.2f} | {d1:.2f} | {d2:.2f} | - | - |")
    notes = [f"{metrics['answered']}/{metrics['samples']} answered"]
    if metrics.get("answers_split_at_response_line"):
        notes.append(f"{metrics['answers_split_at_response_line']} split at their Response: line")
    dist = ([f"{metrics['dist1_paper_x100']:.2f}", f"{metrics['dist2_paper_x100']:.2f}"]
            if metrics.get("paper_responses", 1) else ["n/a (no response found)"] * 2)
    lines.append(f"| {name} ({'; '.join(notes)}) | {metrics['emotion_accuracy_paper_x100']:.2f} | {dist[0]} | "
                 f"{dist[1]} | {metrics['emotion_accuracy_strict_x100']:.2f} | "
                 f"{metrics['emotion_accuracy_lenient_x100']:.2f} |")
    return "\n".join(lines)


def evaluate_predictions_file(predictions_file: str, gold: Optional[Sequence[Mapping[str, Any]]] = None,
                              output_file: Optional[str] = None, extra: Optional[Dict[str, Any]] = None
                              ) -> Dict[str, Any]:
    """Load predictions, compute the metrics against `gold`, and write them as JSON to `output_file` (if given).

    With `gold=None` the file must be in the authors' format (:func:`load_authors_predictions`), which carries them.
    """
    if gold is None:
        if not is_authors_predictions(predictions_file):
            raise ValueError(f"{predictions_file}: records with ids need the gold labels of an instruction data set "
                             "(--instructions); only the authors' format (label + predict per line) carries its own")
        answers, gold = load_authors_predictions(predictions_file)
        failed: Dict[str, str] = {}
    else:
        answers, failed = load_predictions(predictions_file)
    metrics = {"predictions": predictions_file, **(extra or {}), **evaluate_answers(answers, gold, failed)}
    if output_file:
        with open(output_file, "w") as f:
            json.dump(metrics, f, indent=2)
    return metrics
