"""A/B studies (modeling_iamm.ab_study, scripts/ab_test.py): pairs prepared from this package's own outputs, the
store, imports, the statistics (against a worked example, statsmodels, scikit-learn and SciPy) and the report."""

import csv
import importlib.util
import io
import json
import os
import random
import sqlite3

import pytest

from modeling_iamm.ab_study import (
    CHOICES,
    PAPER_ASPECTS,
    Study,
    StudyError,
    build_report,
    cohen_kappa,
    fleiss_kappa,
    load_dialogues,
    parse_aspects,
    prepare_study,
    read_outputs,
    report_markdown,
    sign_test,
    status_text,
    study_status,
    verdict,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ab_test_script():
    spec = importlib.util.spec_from_file_location("iamm_ab_test_script", os.path.join(ROOT, "scripts", "ab_test.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli(*argv):
    """Run `scripts/ab_test.py` in-process; the message it exits with (None on success)."""
    try:
        ab_test_script().main([str(a) for a in argv])
    except SystemExit as stop:
        return str(stop.code) if stop.code not in (None, 0) else None
    return None


def prepare(folder, ab_outputs, **kwargs):
    a = read_outputs(ab_outputs["eval0"])
    b = read_outputs(ab_outputs["eval1"])
    return prepare_study(str(folder), a, b, kwargs.pop("name_a", "M0"), kwargs.pop("name_b", "M1"), **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Pairs
# ---------------------------------------------------------------------------------------------------------------


def test_pairs_from_two_evaluations(tmp_path, ab_outputs):
    study = prepare(tmp_path / "s", ab_outputs, num_samples=30, seed=7)
    records = {r["id"]: r for r in map(json.loads, open(ab_outputs["eval0"]))}
    other = {r["id"]: r for r in map(json.loads, open(ab_outputs["eval1"]))}
    pairs = study.pairs()
    assert len(pairs) == 30 and len({p.pair_id for p in pairs}) == 30 and [p.position for p in pairs] == list(range(30))
    for pair in pairs:
        record = records[pair.pair_id]
        assert pair.dialogue.turns == record["context"] and pair.dialogue.situation == record["situation"]
        assert pair.dialogue.roles[-1] == "speaker" and len(pair.dialogue.roles) == len(pair.dialogue.turns)
        assert pair.dialogue.gold == record["gold_response"]  # kept for the report ...
        assert pair.response_a == record["generated_response"] and pair.response_b == other[pair.pair_id]["generated_response"]
        shown = pair.shown()  # ... never shown: the candidates are the two systems' responses, in the stored order
        assert shown == ((pair.response_a, pair.response_b) if pair.first == "a" else (pair.response_b, pair.response_a))
    assert {p.first for p in pairs} == {"a", "b"}
    # identical responses: a tie nobody is asked about
    identical = [p for p in pairs if p.response_a.split() == p.response_b.split()]
    assert identical and all(p.identical for p in identical)
    assert {p.pair_id for p in study.asked_pairs()} == {p.pair_id for p in pairs} - {p.pair_id for p in identical}
    # the draw and the display orders come from the seed, and are stored (reopening reads them back)
    again = prepare(tmp_path / "again", ab_outputs, num_samples=30, seed=7)
    assert [(p.pair_id, p.first) for p in again.pairs()] == [(p.pair_id, p.first) for p in Study.open(study.folder).pairs()]
    other_seed = prepare(tmp_path / "other", ab_outputs, num_samples=30, seed=8)
    assert [(p.pair_id, p.first) for p in other_seed.pairs()] != [(p.pair_id, p.first) for p in pairs]
    # each annotator gets the asked pairs in an order of their own, the same at every visit
    order = study.order_for("alice")
    assert sorted(order) == sorted(p.pair_id for p in study.asked_pairs())
    assert order == Study.open(study.folder).order_for("alice") != study.order_for("bob")
    with sqlite3.connect(study.db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert study.meta["sources"]["a"]["response_field"] == "generated_response"


def test_llm_results_joined_to_the_data(tmp_path, ab_outputs):
    """prompt_openai.py's results file (answers `Emotion: ...\\nResponse: ...`, a failed request) has no dialogues:
    they come from --data, and the response is the parsed reply; an empty response stays."""
    folder = tmp_path / "s"
    message = cli("prepare", "--a", ab_outputs["eval0"], "--b", ab_outputs["llm"], "--name_a", "IAMM", "--name_b",
                  "GPT", "--study", folder, "--data", ab_outputs["data"], "--split", "valid")
    assert message is None
    study = Study.open(str(folder))
    ids = ab_outputs["ids"]
    failed = ids[2]  # its request failed: no response of system B, so no pair
    assert {p.pair_id for p in study.pairs()} == set(ids) - {failed}
    empty, html_pair = study.pair(ids[0]), study.pair(ids[1])
    assert empty.response_b == "" and "" in empty.shown()  # shown as empty
    assert html_pair.response_b.startswith("<img") and "Emotion" not in html_pair.response_b
    assert study.meta["sources"]["b"]["skipped"] == {"failed request": 1}
    dialogues = load_dialogues(ab_outputs["data"], "valid")
    assert study.pair(ids[5]).dialogue.turns == dialogues[ids[5]].turns
    assert study.pair(ids[5]).dialogue.gold == dialogues[ids[5]].gold
    # without --data the LLM file's ids have no dialogue: one line saying what to pass
    message = cli("prepare", "--a", ab_outputs["llm"], "--b", ab_outputs["llm"], "--name_a", "x", "--name_b", "y",
                  "--study", tmp_path / "none")
    assert "have no dialogue" in message and "--data" in message and not (tmp_path / "none").exists()


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return str(path)


def test_bad_inputs_are_one_line_and_no_study(tmp_path, ab_outputs):
    records = [json.loads(line) for line in open(ab_outputs["eval0"])]
    a = ab_outputs["eval0"]
    cases = {
        "no ids in common": (write_jsonl(tmp_path / "other.jsonl", [{**r, "id": "x" + r["id"]} for r in records]),
                             "no sample id in common"),
        "an id twice": (write_jsonl(tmp_path / "twice.jsonl", records + records[:1]),
                        f"line {len(records) + 1}: id {records[0]['id']!r} again (first on line 1)"),
        "two dialogues": (write_jsonl(tmp_path / "changed.jsonl", [records[0] | {"situation": "another story"}]
                                      + records[1:]), f"id {records[0]['id']!r} has two different dialogues"),
        "no response": (write_jsonl(tmp_path / "noresp.jsonl", [{"id": r["id"], "context": r["context"]}
                                                                 for r in records]), "line 1 (hit:3_conv:6#1): no response"),
    }
    with open(tmp_path / "cut.jsonl", "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records[:3]) + json.dumps(records[3])[:40])
    cases["unreadable line"] = (str(tmp_path / "cut.jsonl"), "line 4: not a JSON record")
    for name, (b, expected) in cases.items():
        study = tmp_path / name.replace(" ", "_")
        message = cli("prepare", "--a", a, "--b", b, "--name_a", "A", "--name_b", "B", "--study", study)
        assert message is not None and expected in message, (name, message)
        assert "\n" not in message and message.startswith("ab_test: ")
        assert not study.exists(), name  # no study, not even a folder
    for extra, expected in [
        (["--num_samples", "1000"], "ask for at most 50"),
        (["--name_a", "IAMM", "--name_b", "iamm"], "different names"),
        (["--aspects", "empathy", "politeness"], "'politeness' needs a definition"),
    ]:
        message = cli("prepare", "--a", a, "--b", ab_outputs["eval1"], "--study", tmp_path / "flags", *extra)
        assert message is not None and expected in message and "\n" not in message, message
        assert not (tmp_path / "flags").exists()
    # a study is never prepared twice over its answers
    assert cli("prepare", "--a", a, "--b", ab_outputs["eval1"], "--study", tmp_path / "once") is None
    message = cli("prepare", "--a", a, "--b", ab_outputs["eval1"], "--study", tmp_path / "once")
    assert "already holds a study" in message


def test_aspects_are_configurable():
    assert parse_aspects(None) == PAPER_ASPECTS
    assert [a.name for a in PAPER_ASPECTS] == ["empathy", "relevance", "fluency"]
    custom = parse_aspects(["empathy", "informativeness=Whether the response adds something new."])
    assert [a.name for a in custom] == ["empathy", "informativeness"] and custom[1].definition.startswith("Whether")
    with pytest.raises(StudyError, match="given twice"):
        parse_aspects(["empathy", "empathy"])
    with pytest.raises(StudyError, match="is not a name"):
        parse_aspects(["my aspect=x"])


# ---------------------------------------------------------------------------------------------------------------
# The store and imports
# ---------------------------------------------------------------------------------------------------------------


def test_answering_again_replaces_never_duplicates(tmp_path, ab_outputs):
    study = prepare(tmp_path / "s", ab_outputs, num_samples=20, seed=1)
    pair = study.asked_pairs()[0]
    first = study.save_screen_answers("alice", pair.pair_id, {"empathy": "1", "relevance": "2", "fluency": "equal"})
    assert first == {"empathy": pair.first, "relevance": "b" if pair.first == "a" else "a", "fluency": "equal"}
    study.save_screen_answers("alice", pair.pair_id, {"empathy": "2", "relevance": "2", "fluency": "equal"})
    with sqlite3.connect(study.db_path) as conn:
        rows = conn.execute("SELECT aspect, choice, shown, revisions FROM judgements WHERE annotator = 'alice' "
                            "ORDER BY aspect").fetchall()
    other = "b" if pair.first == "a" else "a"
    assert rows == [("empathy", other, "2", 1), ("fluency", "equal", "equal", 0), ("relevance", other, "2", 0)]
    with pytest.raises(StudyError, match="answer every aspect first"):
        study.save_screen_answers("alice", pair.pair_id, {"empathy": "1"})
    with pytest.raises(StudyError, match="reserved for LLM judges"):
        study.save_screen_answers("judge:me", pair.pair_id, {"empathy": "1", "relevance": "1", "fluency": "1"})
    identical = next(p for p in study.pairs() if p.identical)
    with pytest.raises(StudyError, match="identical responses"):
        study.save_screen_answers("alice", identical.pair_id, {"empathy": "1", "relevance": "1", "fluency": "1"})
    assert len(study.judgements()) == 3


def write_csv(path, rows, header=("pair_id", "annotator", "aspect", "choice")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def test_import_validates_every_line_and_writes_all_or_nothing(tmp_path, ab_outputs):
    study = prepare(tmp_path / "s", ab_outputs, num_samples=20, seed=1, name_a="IAMM", name_b="w/o-IA")
    p1, p2 = (p.pair_id for p in study.asked_pairs()[:2])
    good = write_csv(tmp_path / "crowd.csv", [[p1, "w1", "empathy", "a"], [p1, "w1", "relevance", "IAMM"],
                                              [p1, "w1", "fluency", "equal"], [p2, "w2", "empathy", "W/O-IA"]])
    bad_cases = {
        "unknown pair": ([["nope#1", "w1", "empathy", "a"]], "line 3: unknown pair 'nope#1'"),
        "unknown aspect": ([[p1, "w1", "politeness", "a"]], "line 3: unknown aspect 'politeness'"),
        "unknown choice": ([[p1, "w1", "empathy", "maybe"]], "line 3: unknown choice 'maybe'"),
        "screen position": ([[p1, "w1", "empathy", "1"]], "never a screen position"),
        "two answers": ([[p1, "w1", "empathy", "a"], [p1, "w1", "empathy", "b"]], "line 4: w1 answered empathy"),
    }
    for name, (extra, expected) in bad_cases.items():
        path = write_csv(tmp_path / f"{name}.csv", [[p2, "w3", "fluency", "b"], *extra])
        with pytest.raises(StudyError, match="^" + str(tmp_path).replace("\\", "\\\\")) as error:
            study.import_judgements(path)
        assert expected in str(error.value) and "\n" not in str(error.value), (name, error.value)
        assert study.judgements() == []  # nothing of the file was written
    jsonl = write_jsonl(tmp_path / "crowd.jsonl", [{"id": p2, "annotator": "w2", "aspect": "fluency", "choice": "b"}])
    assert cli("import", "--study", study.folder, "--file", good) is None
    assert study.import_judgements(jsonl) == {"records": 1, "annotators": 1, "replaced": 0}
    answers = {(j.annotator, j.pair_id, j.aspect): j.choice for j in study.judgements()}
    assert answers == {("w1", p1, "empathy"): "a", ("w1", p1, "relevance"): "a", ("w1", p1, "fluency"): "equal",
                       ("w2", p2, "empathy"): "b", ("w2", p2, "fluency"): "b"}
    assert study.import_judgements(good)["replaced"] == 4  # importing again replaces, never duplicates
    assert len(study.judgements()) == 5
    message = cli("import", "--study", study.folder, "--file", tmp_path / "unknown pair.csv")
    assert message.startswith("ab_test: ") and "line 3: unknown pair" in message


# ---------------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------------

# The worked example of Fleiss' kappa on Wikipedia ("Fleiss' kappa", Worked example): 10 subjects, 14 raters each,
# 5 categories; P-bar = 0.378, P-bar_e = 0.213, kappa = 0.210.
FLEISS_EXAMPLE = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                  [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def test_fleiss_kappa_against_the_worked_example_and_statsmodels():
    assert fleiss_kappa(FLEISS_EXAMPLE) == pytest.approx(0.20993, abs=5e-5)
    from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_kappa

    rng = random.Random(0)
    for _ in range(20):
        raters = rng.randint(2, 6)
        table = []
        for _ in range(rng.randint(5, 40)):
            bias = rng.random()
            choices = [("a" if rng.random() < bias else rng.choice(CHOICES)) for _ in range(raters)]
            table.append([choices.count(c) for c in CHOICES])
        assert fleiss_kappa(table) == pytest.approx(statsmodels_kappa(table), abs=1e-12)
    assert fleiss_kappa([[3, 0, 0], [0, 3, 0], [0, 0, 3]]) == pytest.approx(1.0)
    assert fleiss_kappa([[2, 0, 0], [2, 0, 0]]) is None  # one category only: undefined, not 1 or 0
    assert fleiss_kappa([[1, 0, 0]]) is None  # a single rating agrees with nobody
    # subjects with fewer ratings count over their own raters: a subject of 2 raters weighs like one of 3
    assert fleiss_kappa([[2, 0, 0], [0, 3, 0], [1, 1, 1]]) == pytest.approx(
        ((1 + 1 + 0) / 3 - sum(p * p for p in (3 / 8, 4 / 8, 1 / 8))) / (1 - sum(p * p for p in (3 / 8, 4 / 8, 1 / 8))))


def test_cohen_kappa_and_sign_test_against_scikit_learn_and_scipy():
    from scipy.stats import binomtest
    from sklearn.metrics import cohen_kappa_score

    rng = random.Random(1)
    for _ in range(20):
        x = [rng.choice(CHOICES) for _ in range(30)]
        y = [c if rng.random() < 0.6 else rng.choice(CHOICES) for c in x]
        assert cohen_kappa(x, y) == pytest.approx(cohen_kappa_score(x, y, labels=list(CHOICES)), abs=1e-12)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None
    for wins, losses in [(0, 0), (5, 5), (12, 3), (30, 12), (0, 9), (51, 40)]:
        expected = 1.0 if wins + losses == 0 else binomtest(wins, wins + losses, 0.5).pvalue
        assert sign_test(wins, losses) == pytest.approx(expected, rel=1e-9)
    assert verdict(["a", "a", "b"]) == "a" and verdict(["a", "b", "equal"]) == "equal" and verdict(["b"]) == "b"
    assert verdict(["a", "b"]) == "equal"


def test_report_counts_every_answer_as_the_paper_does(tmp_path, ab_outputs):
    study = prepare(tmp_path / "s", ab_outputs, num_samples=40, seed=3, name_a="IAMM", name_b="w/o-IA")
    asked, identical = study.asked_pairs(), [p for p in study.pairs() if p.identical]
    assert len(identical) >= 2
    rng = random.Random(5)
    for name in ("alice", "bob", "carol"):
        for pair in asked:
            study.save_screen_answers(name, pair.pair_id, {a: rng.choice(["1", "2", "equal"]) for a in
                                                           study.aspect_names})
    judge_verdicts = {p.pair_id: {a: rng.choice(CHOICES) for a in study.aspect_names} for p in asked}
    study.record_judge("judge:test", {"model": "test"}, [], judge_verdicts, "judge:test.jsonl")
    report = build_report(study)
    answers = study.judgements()
    for aspect in study.aspect_names:
        people = [j.choice for j in answers if j.kind == "person" and j.aspect == aspect]
        points = len(people) + 3 * len(identical)  # identical pairs: Equal for each of the three annotators
        row = report["groups"]["people"]["aspects"][aspect]
        assert row["points"] == points
        assert row["win"] == pytest.approx(100 * people.count("a") / points)
        assert row["lose"] == pytest.approx(100 * people.count("b") / points)
        assert row["equal"] == pytest.approx(100 * (people.count("equal") + 3 * len(identical)) / points)
        table = [[sum(j.choice == c for j in answers if j.kind == "person" and j.aspect == aspect
                      and j.pair_id == p.pair_id) for c in CHOICES] for p in asked]
        assert row["kappa"] == pytest.approx(fleiss_kappa(table)) and row["kappa_pairs"] == len(asked)
        majority = {p.pair_id: verdict([j.choice for j in answers if j.kind == "person" and j.aspect == aspect
                                        and j.pair_id == p.pair_id]) for p in asked}
        wins, losses = list(majority.values()).count("a"), list(majority.values()).count("b")
        assert row["pair_verdicts"] == {"win": wins, "lose": losses, "equal": len(asked) - wins - losses + len(identical)}
        assert row["sign_test_p"] == pytest.approx(sign_test(wins, losses))
        agreement = report["judge_agreement"][aspect]["judge:test"]
        theirs = [judge_verdicts[p.pair_id][aspect] for p in asked]
        assert agreement["pairs"] == len(asked)
        assert agreement["cohen_kappa"] == pytest.approx(cohen_kappa(theirs, [majority[p.pair_id] for p in asked]))
    assert report["groups"]["people"]["annotators"] == ["alice", "bob", "carol"]
    markdown = report_markdown(report)
    assert "| Comparison | Emp. Win | Emp. Lose | Emp. κ | Rel. Win | Rel. Lose | Rel. κ | Flu. Win |" in markdown
    win = report["groups"]["people"]["aspects"]["empathy"]["win"]
    assert f"| IAMM vs w/o-IA (people, 3) | {win:.1f} |" in markdown
    assert "| judge:test |" in markdown
    # --json gives the same numbers
    printed = json.loads(ab_json := _capture_report(study))
    assert printed["groups"]["people"]["aspects"]["empathy"]["win"] == pytest.approx(win) and ab_json


def _capture_report(study):
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert cli("report", "--study", study.folder, "--json", "true") is None
    return buffer.getvalue()


def test_status_counts_answers_per_annotator_and_open_pairs(tmp_path, ab_outputs):
    study = prepare(tmp_path / "s", ab_outputs, num_samples=20, seed=2)
    asked = study.asked_pairs()
    for pair in asked[:3]:
        study.save_screen_answers("alice", pair.pair_id, {"empathy": "1", "relevance": "1", "fluency": "2"})
    study.import_judgements(write_csv(tmp_path / "c.csv", [[asked[3].pair_id, "w1", "empathy", "a"]]))
    status = study_status(study)
    assert status["annotators"]["alice"] == {"kind": "person", "complete": 3, "of": len(asked),
                                             "answers": {"empathy": 3, "relevance": 3, "fluency": 3}}
    assert status["annotators"]["w1"]["complete"] == 0 and status["annotators"]["w1"]["answers"]["empathy"] == 1
    assert status["open_pairs"] == {"people": len(asked) - 3, "judges": len(asked)}
    text = status_text(status)
    assert f"3 of {len(asked)} pairs complete" in text and f"pairs no person has completed: {len(asked) - 3}" in text


# ---------------------------------------------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------------------------------------------

STUDY_CLIENT = r'''
import json, sys
from datasets import load_dataset

pairs = load_dataset(sys.argv[1], "pairs", split="train")
answers = load_dataset(sys.argv[1], "judgements", split="train")
print(json.dumps({"pairs": len(pairs), "answers": len(answers), "annotators": sorted(set(answers["annotator"])),
                  "columns": pairs.column_names}))
'''


def test_push_publishes_the_study_as_a_dataset(tmp_path, ab_outputs):
    import subprocess
    import sys

    import pyarrow.parquet as pq
    from huggingface_hub import DatasetCard

    from tests.helpers.hub_server import FakeHub

    study = prepare(tmp_path / "study", ab_outputs, num_samples=12, seed=5, name_a="IAMM", name_b="w/o-IA")
    asked = study.asked_pairs()
    for name in ("alice.smith", "bob"):
        for pair in asked:
            study.save_screen_answers(name, pair.pair_id, {"empathy": "1", "relevance": "2", "fluency": "equal"})
    study.record_judge("judge:m", {"model": "m"}, [(asked[0].pair_id, "a", 'ok {"empathy": "1"}', {"empathy": "1"})],
                       {asked[0].pair_id: {"empathy": "a"}}, "judge:m.jsonl")
    hub = FakeHub().start()
    try:
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_TOKEN="hf_test_token", HF_HOME=str(tmp_path / "home"),
                   OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
        for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            env.pop(key, None)

        def ab_test(*args):
            return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "ab_test.py"), *map(str, args)],
                                  env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)

        proc = ab_test("push", "--study", study.folder, "--repo_id", "org/ab-study")
        assert proc.returncode == 0, proc.stderr[-3000:]
        files = hub.files("org/ab-study", "dataset")
        assert {"README.md", "report.md", "report.json", "study.json", ".iamm_push.json",
                "data/pairs-00000-of-00001.parquet", "data/judgements-00000-of-00001.parquet",
                "data/judge_outputs-00000-of-00001.parquet"} <= set(files)
        assert not any(n.endswith(".sqlite") for n in files)
        for name, content in files.items():  # people are anonymized, and no path of this machine is published
            assert b"alice.smith" not in content and str(tmp_path).encode() not in content, name
        card = DatasetCard(files["README.md"].decode())
        assert [c["config_name"] for c in card.data.configs] == ["pairs", "judgements", "judge_outputs"]
        assert card.data.license == "cc-by-nc-4.0"
        report = build_report(study)
        empathy_win = report["groups"]["people"]["aspects"]["empathy"]["win"]
        assert f"| IAMM vs w/o-IA (people, 2) | {empathy_win:.1f} |" in card.text
        assert "- **empathy**: Whether the emotion in the response is appropriate." in card.text
        assert "2 people and 1 LLM judge(s) answered" in card.text
        info = json.loads(files["study.json"])
        assert info["counts"] == {"pairs": 12, "judgements": 6 * len(asked) + 1, "judge_outputs": 1}
        published = pq.read_table(io.BytesIO(files["data/judgements-00000-of-00001.parquet"]))
        assert sorted(set(published.column("annotator").to_pylist())) == ["annotator-1", "annotator-2", "judge:m"]
        client = subprocess.run([sys.executable, "-c", STUDY_CLIENT, "org/ab-study"], env=env, capture_output=True,
                                text=True, timeout=300, cwd=tmp_path)
        assert client.returncode == 0, client.stderr[-3000:]
        loaded = json.loads(client.stdout.strip().splitlines()[-1])
        assert loaded["pairs"] == 12 and loaded["answers"] == 6 * len(asked) + 1
        assert "response_a" in loaded["columns"] and "shown_first" in loaded["columns"]
        # one line for a folder without a study, before anything is sent
        proc = ab_test("push", "--study", tmp_path, "--repo_id", "org/other")
        assert proc.returncode != 0 and "no study here" in proc.stderr.strip().splitlines()[-1]
        assert "Traceback" not in proc.stderr
    finally:
        hub.stop()
