"""LLM answer scoring: the paper rule on real rows of the IAMM_large authors' released predictions, strict vs lenient
accuracy on crafted answers, Dist-n (paper tokenisation and the project's), missing and failed predictions, the
predictions file formats and the CLI's table and errors."""

import json
import os
import subprocess
import sys

import pytest

from iamm.llm.evaluation import (
    PAPER_TABLE3,
    comparison_table,
    evaluate_answers,
    evaluate_predictions_file,
    load_authors_predictions,
    load_predictions,
    paper_emotion_hit,
    paper_fields,
)
from iamm.llm.treebank import treebank_word_tokenize
from modeling_iamm.metrics import distinct_n

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTHORS_ROWS = os.path.join(ROOT, "tests", "fixtures", "iamm_large_authors", "generated_predictions_rows.jsonl")


# ---- the paper rule, on real rows of the authors' released predictions (fixture: see its README) -----------------
def _authors_scorer(path):
    """What examples/ed_scripts/cal_metrics.py of the authors' repository computes, step by step as it reads: per
    line, gold = label before the first "\n " without "[gMASK]sop Emotion:"; predicted emotion = predict before the
    first "\n " without "Emotion:"; response = the second piece without "Response:" (else ""); hit = gold lower-cased
    in predicted lower-cased. Returns the per-line hits, the responses, and emo_count / emo_total."""
    hits, responses = [], []
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            gold = record["label"].split("\n ")[0].replace("[gMASK]sop Emotion:", "")
            pieces = record["predict"].split("\n ")
            hits.append(gold.lower() in pieces[0].replace("Emotion:", "").lower())
            responses.append(pieces[1].replace("Response:", "") if len(pieces) > 1 else "")
    return hits, responses, sum(hits) / len(hits)


# Read by hand from the fixture rows (source line numbers in its README): 1-6 their first rows (4: devastated for
# caring); 157: "impressed" for proud, "proud" only in the response; 254: "ive Emotion:afraid" (junk before the
# field still hits); 297: "caring" for sad, "sad" in the response; 962, 1893, 2356: hits; 2915: no separator (and
# no "Response:" line), the answer "was the most expensive equipment ?" does not contain "trusting". 962: "ok. so",
# 1893: "can't", 2356: a second "Emotion:" inside the response (only the second piece counts).
EXPECTED_HITS = [True, True, True, False, True, True, False, True, False, True, True, True, False]


def test_paper_rule_per_row_on_the_authors_predictions():
    answers, gold = load_authors_predictions(AUTHORS_ROWS)
    hits, responses, _ = _authors_scorer(AUTHORS_ROWS)
    ours = [paper_emotion_hit(answers[row["id"]], row["emotion"]) for row in gold]
    assert ours == hits == EXPECTED_HITS
    assert [paper_fields(answers[row["id"]])[1] for row in gold] == responses
    assert responses[12] == "" and responses[11] == "i love mustang . did you have a Emotion:surprised"
    # the whole-answer search ("lenient") counts rows 157 and 297, whose label is only in the response
    assert [row["emotion"].lower() in answers[row["id"]].lower() for row in gold] == \
        [h or i in (6, 8) for i, h in enumerate(EXPECTED_HITS)]


def test_paper_metrics_aggregate_on_the_authors_predictions(tmp_path):
    hits, responses, rate = _authors_scorer(AUTHORS_ROWS)
    m = evaluate_predictions_file(AUTHORS_ROWS, output_file=str(tmp_path / "m.json"))
    assert (m["samples"], m["answered"], m["answers_without_paper_separator"]) == (13, 13, 1)
    assert m["emotion_accuracy_paper_x100"] == pytest.approx(100 * rate) == pytest.approx(100 * 9 / 13)
    assert m["emotion_accuracy_lenient_x100"] == pytest.approx(100 * 11 / 13)
    assert m["emotion_accuracy_strict_x100"] == pytest.approx(100 * 9 / 13)  # these answers are all well-formed
    words = [treebank_word_tokenize(r) for r in responses]
    unigrams = [w for ws in words for w in ws]
    bigrams = [tuple(ws[i:i + 2]) for ws in words for i in range(len(ws) - 1)]
    assert m["dist1_paper_x100"] == pytest.approx(100 * len(set(unigrams)) / len(unigrams))
    assert m["dist2_paper_x100"] == pytest.approx(100 * len(set(bigrams)) / len(bigrams))
    assert json.load(open(tmp_path / "m.json"))["emotion_accuracy_paper_x100"] == m["emotion_accuracy_paper_x100"]


# Expected words: NLTK 3.8.1's word_tokenize (the version the authors pinned) with its English Punkt model, run
# once on each text; the comments say what each case checks.
@pytest.mark.parametrize("text, words", [
    ("i can't remember the movie .", ["i", "ca", "n't", "remember", "the", "movie", "."]),
    ("oh ok. so you are jealous ?", ["oh", "ok.", "so", "you", "are", "jealous", "?"]),  # "ok." is an abbreviation
    ("i met mr. smith. he was nice", ["i", "met", "mr.", "smith", ".", "he", "was", "nice"]),
    ("neither could i. it was", ["neither", "could", "i.", "it", "was"]),  # an initial: no sentence end
    ("4 and 1. i have", ["4", "and", "1.", "i", "have"]),
    ("so sorry. ! but", ["so", "sorry", ".", "!", "but"]),  # "!" after a period is a sentence of its own
    ("wait... what", ["wait", "...", "what"]),
    ("says 'bones only ! !", ["says", "'bones", "only", "!", "!"]),  # 3.8.1 keeps an opening quote on its word
    ("a well-known fact\u2014really", ["a", "well-known", "fact\u2014really"]),  # and dashes inside words
    ("\u201cHello there.\u201d Bye.", ["\u201c", "Hello", "there.", "\u201d", "Bye", "."]),
    ('He said "hi" (twice), 3,36 euros; it\'s 5:30', ["He", "said", "``", "hi", "''", "(", "twice", ")", ",", "3,36",
                                                      "euros", ";", "it", "'s", "5:30"]),
    ("i cannot -- gonna go", ["i", "can", "not", "--", "gon", "na", "go"]),
])
def test_treebank_word_tokenize(text, words):
    assert treebank_word_tokenize(text) == words


AUTHORS_SLICE = os.path.join(ROOT, "tests", "fixtures", "iamm_large_authors",
                             "generated_predictions_lines_901-1000_3401-3500.jsonl")


def test_paper_figures_equal_their_scorer_on_a_slice_of_their_predictions():
    """Their scorer (examples/ed_scripts/cal_metrics.py and evaluate.py, NLTK 3.8.1 with the English Punkt model)
    on these 200 rows of their released predictions gives ACC 0.63, Dist-1 0.16504504504504505 and Dist-2
    0.5293203883495146 (see the fixture's README); on their whole file the same run gives their logged
    0.6260704091341579 / 0.035529610478123655 / 0.21709860376934076. Rows 962 ("ok. so") and 3446 ("'bones")
    are in the slice: a splitter without the English model, or later NLTK's quote rule, gives other figures."""
    m = evaluate_predictions_file(AUTHORS_SLICE)
    assert m["samples"] == 200
    assert m["emotion_accuracy_paper_x100"] == pytest.approx(63.0, abs=1e-12)
    assert m["dist1_paper_x100"] == pytest.approx(100 * 0.16504504504504505, abs=1e-12)
    assert m["dist2_paper_x100"] == pytest.approx(100 * 0.5293203883495146, abs=1e-12)


def test_authors_predictions_need_no_gold_but_ids_do(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "a", "output": "Emotion: sad"}) + "\n")
    with pytest.raises(ValueError, match="need the gold labels of an instruction data set"):
        evaluate_predictions_file(str(path))
    garbage = tmp_path / "g.jsonl"
    garbage.write_text(open(AUTHORS_ROWS).readline() + "not json\n")
    with pytest.raises(ValueError, match=r"g.jsonl, line 2: not a JSON record"):
        load_authors_predictions(str(garbage))


# ---- crafted answers -----------------------------------------------------------------------------------------------

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
    # paper rule: none of these has the authors' "\n " separator; a, b and c are split before their "Response:"
    # line (c's "proud" stands before it, in the emotion text), d ("**Response**:") is searched whole
    assert m["emotion_accuracy_paper_x100"] == pytest.approx(100 * 4 / 5)
    assert m["answers_without_paper_separator"] == 4 and m["answers_split_at_response_line"] == 3
    assert m["emotion_accuracy_strict_x100"] == pytest.approx(100 * 2 / 5)
    assert m["emotion_accuracy_lenient_x100"] == pytest.approx(100 * 4 / 5)
    assert m["emotion_accuracy_strict_answered_x100"] == pytest.approx(100 * 2 / 4)
    assert m["emotion_accuracy_lenient_answered_x100"] == pytest.approx(100 * 4 / 4)
    # valid label: a (sad), c (excited), d (afraid after trimming); b's "discontent" is not a label
    assert m["valid_label_x100"] == pytest.approx(100 * 3 / 4)


@pytest.mark.parametrize("answer, counts", [
    ("Emotion: sad\nResponse: ok", True),
    ("**Emotion**: Sad.\nResponse: ok", True),
    ("Emotion: ```sad```\n Response:```ok```", True),
    ("Emotion: not sad, just tired\nResponse: ok", False),
    ("Emotion: Sadness\nResponse: ok", False),
    ("Emotion: sad, lonely\nResponse: ok", False),
    ("Sad\nResponse: ok", False),  # no Emotion: field
])
def test_strict_is_exact_after_normalisation(answer, counts):
    m = evaluate_answers({"a": answer}, GOLD[:1])
    assert m["emotion_accuracy_strict_x100"] == (100.0 if counts else 0.0)
    assert m["valid_label_x100"] == (100.0 if counts else 0.0)


def test_paper_rule_reads_only_the_emotion_line():
    assert paper_emotion_hit("Emotion:caring\n Response:so sad", "sad") is False
    assert paper_emotion_hit("Emotion:Sadness\n Response:ok", "sad") is True  # substring, case-insensitive
    assert paper_emotion_hit("Emotion:discontent\n Response:ok", "content") is True
    assert paper_fields("Emotion:sad\n Response:a\n Response:b") == ("sad", "a")


def test_answers_without_the_space_are_split_at_their_response_line():
    """OpenAI models write "Emotion: x\nResponse: y": the paper rule reads them as if the authors' "\n " were
    there (emotion text before the Response: line, the response after it), counts and labels them, and prints no
    Dist of 0 for answers that have responses."""
    from iamm.llm.evaluation import paper_distinct_n, with_paper_separator

    assert with_paper_separator("Emotion: sad\nResponse: I am so sorry.") == \
        ("Emotion: sad\n Response: I am so sorry.", True)
    assert with_paper_separator("Emotion:sad\n Response:ok\nResponse: x") == ("Emotion:sad\n Response:ok\nResponse: x",
                                                                                False)  # theirs: untouched
    answers = {"a": "Emotion: sad\nResponse: I am so sorry. That is hard.",
               "b": "Emotion: joyful\nResponse: Congratulations, you earned it!\nWell done.",
               "c": "Emotion: caring\nResponse: I am sad to hear that."}
    gold = [{"id": "a", "emotion": "sad"}, {"id": "b", "emotion": "content"}, {"id": "c", "emotion": "sad"}]
    m = evaluate_answers(answers, gold)
    responses = [" I am so sorry. That is hard.", " Congratulations, you earned it!\nWell done.",
                 " I am sad to hear that."]
    assert m["answers_split_at_response_line"] == 3 and m["paper_responses"] == 3
    assert m["dist1_paper_x100"] == pytest.approx(100 * paper_distinct_n(responses, 1)) and m["dist1_paper_x100"] > 0
    assert m["dist2_paper_x100"] == pytest.approx(100 * paper_distinct_n(responses, 2))
    assert m["emotion_accuracy_paper_x100"] == pytest.approx(100 / 3)  # c's "sad" is in its response: no hit
    assert "| run (3/3 answered; 3 split at their Response: line) | 33.33 |" in comparison_table(m, "run")
    none = evaluate_answers({"a": "I am sad."}, gold[:1])
    assert none["paper_responses"] == 0
    assert "| run (1/1 answered) | 100.00 | n/a (no response found) | n/a (no response found) |" in \
        comparison_table(none, "run")


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
    assert table.startswith("| run | Acc (paper rule) | Dist-1 (paper rule) | Dist-2 (paper rule) | Acc strict |")
    for row, acc, d1, d2 in PAPER_TABLE3:
        assert f"| {row} | {acc:.2f} | {d1:.2f} | {d2:.2f} | - | - |" in table
    assert (f"| crafted (4/5 answered; 3 split at their Response: line) | 80.00 | {m['dist1_paper_x100']:.2f} | "
            f"{m['dist2_paper_x100']:.2f} | 40.00 | 80.00 |") in table


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
    assert "1 of 5 samples have no prediction" in proc.stdout
    assert "| crafted (4/5 answered; 3 split at their Response: line) |" in proc.stdout


def _script_error(tmp_path, argv):
    """Run scripts/evaluate_llm.py's main in-process; return its one-line exit message (it must exit non-zero)."""
    import runpy

    main = runpy.run_path(os.path.join(ROOT, "scripts", "evaluate_llm.py"), run_name="imported")["main"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value.code)
    assert exit_info.value.code not in (0, None) and "\n" not in message and message.startswith("evaluate_llm: ")
    return message


def test_evaluate_llm_script_user_mistakes(tmp_path):
    from datasets import Dataset

    from iamm.llm.instructions import INSTRUCTION_FEATURES, instruction_row, save_instruction_split

    row = instruction_row({"conv_id": "c0", "turn": 1, "situation": "s", "context": ["hello"], "emotion": "sad",
                           "target": "hi"}, [("word", 0.9)])
    save_instruction_split(Dataset.from_list([row], features=INSTRUCTION_FEATURES), str(tmp_path / "instr"), "test")
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": "c0#1", "output": "Emotion: sad"}) + "\n")
    metrics = tmp_path / "preds.metrics.json"
    assert "no instruction data" in _script_error(tmp_path, ["--predictions", str(preds), "--instructions",
                                                             str(tmp_path / "nowhere")])
    assert "split(s) ['valid'] not built" in _script_error(tmp_path, ["--predictions", str(preds), "--instructions",
                                                                      str(tmp_path / "instr"), "--split", "valid"])
    assert "need the gold labels" in _script_error(tmp_path, ["--predictions", str(preds)])
    assert "no such predictions file" in _script_error(
        tmp_path, ["--predictions", str(tmp_path / "none.jsonl"), "--instructions", str(tmp_path / "instr")])
    preds.write_text(json.dumps({"id": "c0#1", "output": "Emotion: sad"}) + "\nthis is not json\n")
    assert "line 2: not a JSON record" in _script_error(tmp_path, ["--predictions", str(preds), "--instructions",
                                                                   str(tmp_path / "instr")])
    preds.write_text("[1, 2]\n")
    assert "record 1: not a JSON object" in _script_error(tmp_path, ["--predictions", str(preds), "--instructions",
                                                                     str(tmp_path / "instr")])
    assert not metrics.exists()
