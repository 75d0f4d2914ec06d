"""LLM answer scoring: strict vs lenient accuracy on crafted answers, Dist-n through the project's metric, missing
and failed predictions, the predictions file format and the CLI's table."""

import json
import os
import subprocess
import sys

import pytest

from iamm.llm.evaluation import PAPER_TABLE3, comparison_table, evaluate_answers, load_predictions
from modeling_iamm.metrics import distinct_n

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOLD = [{"id": "a", "emotion": "sad"}, {"id": "b", "emotion": "content"}, {"id": "c", "emotion": "proud"},
        {"id": "d", "emotion": "afraid"}, {"id": "e", "emotion": "joyful"}]
ANSWERS = {
    "a": "Emotion: sad\nResponse: I am so sorry.",  # strict and lenient hit
    "b": "Emotion: discontent\nResponse: That sounds hard.",  # lenient only: 'content' inside 'discontent'
    "c": "I think you feel proud, maybe excited.\nEmotion: excited\nResponse: Congratulations!",  # lenient only
    "d": "**Emotion**: Afraid.\n**Response**: Stay safe out there.",  # strict and lenient hit
    # "e" missing
}


def test_strict_and_lenient_accuracy_differ_as_documented():
    m = evaluate_answers(ANSWERS, GOLD)
    assert m["samples"] == 5 and m["answered"] == 4 and m["missing"] == 1
    assert m["emotion_accuracy_strict_x100"] == pytest.approx(100 * 2 / 5)
    assert m["emotion_accuracy_lenient_x100"] == pytest.approx(100 * 4 / 5)
    assert m["emotion_accuracy_strict_answered_x100"] == pytest.approx(100 * 2 / 4)
    assert m["emotion_accuracy_lenient_answered_x100"] == pytest.approx(100 * 4 / 4)
    # valid label: a (sad), c (excited), d (afraid after trimming); b's "discontent" is not a label
    assert m["valid_label_x100"] == pytest.approx(100 * 3 / 4)


def test_dist_is_the_project_metric_on_parsed_responses():
    m = evaluate_answers(ANSWERS, GOLD)
    responses = ["I am so sorry.", "That sounds hard.", "Congratulations!", "Stay safe out there."]
    assert m["dist1_x100"] == pytest.approx(100 * distinct_n(responses, 1))
    assert m["dist2_x100"] == pytest.approx(100 * distinct_n(responses, 2))
    # the raw answers (with their "Emotion:" lines) would give other numbers: the parsed responses are scored
    assert m["dist1_x100"] != pytest.approx(100 * distinct_n(list(ANSWERS.values()), 1))


def test_answers_listing_all_labels_are_flagged():
    from modeling_iamm import EMOTION_LABELS

    echo = {"a": "The emotion must be one of: " + ", ".join(EMOTION_LABELS)}
    m = evaluate_answers(echo, GOLD[:1])
    assert m["answers_naming_many_labels"] == 1 and m["emotion_accuracy_lenient_x100"] == 100.0
    assert m["emotion_accuracy_strict_x100"] == 0.0


def test_predictions_file_formats(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [
        {"__header__": {"model": "x"}},
        {"id": "a", "status": "failed", "error": "RateLimitError"},
        {"id": "a", "status": "answered", "output": "Emotion: sad\nResponse: ok"},  # retried later: counts
        {"id": "b", "answer": "Emotion: content\nResponse: fine"},  # a generation script's key
        {"id": "c", "status": "failed", "error": "APITimeoutError: timed out"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"id": "d", "out')  # unfinished last line
    answers, failed = load_predictions(str(path))
    assert answers == {"a": "Emotion: sad\nResponse: ok", "b": "Emotion: content\nResponse: fine"}
    assert failed == {"c": "APITimeoutError: timed out"}
    m = evaluate_answers(answers, GOLD, failed)
    assert (m["answered"], m["missing"], m["failed"]) == (2, 3, 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "text": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"record 1 \(a\): no answer text under output or answer"):
        load_predictions(str(bad))
    with pytest.raises(ValueError, match="none of the 1 predictions matches"):
        evaluate_answers({"zzz": "Emotion: sad"}, GOLD)


def test_table_has_the_paper_rows_and_this_run():
    m = evaluate_answers(ANSWERS, GOLD)
    table = comparison_table(m, "crafted")
    for row, acc, d1, d2 in PAPER_TABLE3:
        assert f"| {row} | {acc:.2f} | - | {d1:.2f} | {d2:.2f} |" in table
    assert "| crafted (4/5 answered) | 80.00 | 40.00 |" in table


def test_evaluate_llm_script(tmp_path):
    from datasets import Dataset

    from iamm.llm.instructions import INSTRUCTION_FEATURES, instruction_row, save_instruction_split

    samples = [{"conv_id": f"c{i}", "turn": 1, "situation": "s", "context": ["hello"], "emotion": g["emotion"],
                "target": "hi"} for i, g in enumerate(GOLD)]
    rows = [instruction_row(s, [("word", 0.9)]) for s in samples]
    save_instruction_split(Dataset.from_list(rows, features=INSTRUCTION_FEATURES), str(tmp_path / "instr"), "test")
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": f"c{i}#1", "output": ANSWERS[g["id"]]}) + "\n"
                             for i, g in enumerate(GOLD) if g["id"] in ANSWERS))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "evaluate_llm.py"), "--predictions", str(preds),
                           "--instructions", str(tmp_path / "instr"), "--name", "crafted"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.load(open(tmp_path / "preds.metrics.json"))
    assert metrics["emotion_accuracy_lenient_x100"] == pytest.approx(80.0)
    assert "1 of 5 samples have no prediction" in proc.stdout and "| crafted (4/5 answered) |" in proc.stdout
