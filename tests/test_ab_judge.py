"""The LLM judge of A/B studies (iamm.llm.judge) against the local OpenAI-compatible server: prompts, both display
orders and the position-bias rule, unreadable answers, rate limits and failures, a kill, several judges' kappa."""

import json
import os
import runpy
import signal
import subprocess
import sys
import time

import pytest

from iamm.llm.judge import (
    combine,
    judge_messages,
    parse_verdicts,
    request_id,
    results_path,
    run_judge,
)
from iamm.llm.openai_prompting import PromptingConfig, latest_records
from modeling_iamm.ab_study import PAPER_ASPECTS, Study, build_report, load_dialogues, prepare_study, read_outputs
from tests.helpers.openai_server import OpenAIServer, _block, heuristic_judge

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASPECTS = [a.name for a in PAPER_ASPECTS]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")


@pytest.fixture()
def study(tmp_path, ab_outputs):
    return prepare_study(str(tmp_path / "study"), read_outputs(ab_outputs["eval0"]), read_outputs(ab_outputs["llm"]),
                         "IAMM", "GPT", num_samples=16, seed=4, dialogues=load_dialogues(ab_outputs["data"], "valid"))


def config(server, **kwargs):
    defaults = dict(model="judge-model", base_url=server.base_url, api_key="test", request_timeout=3.0,
                    backoff_initial=0.01, backoff_max=0.05, max_attempts=3, concurrency=4)
    return PromptingConfig(**{**defaults, **kwargs})


def test_prompt_shows_both_orders_and_the_definitions(study):
    pair = next(p for p in study.asked_pairs() if p.response_a and p.response_b)
    first_a, first_b = judge_messages(pair, study.aspects, "a"), judge_messages(pair, study.aspects, "b")
    system, user = first_a[0]["content"], first_a[1]["content"]
    for aspect in PAPER_ASPECTS:
        assert f"- {aspect.name}: {aspect.definition}" in system  # the paper's definitions
    assert "position bias" in system and '"empathy": "1"' in system
    assert _block(user, "Response 1") == pair.response_a and _block(user, "Response 2") == pair.response_b
    assert _block(first_b[1]["content"], "Response 1") == pair.response_b  # the other order swaps them
    assert first_b[0] == first_a[0]
    dialogue = _block(user, "Dialogue").splitlines()
    assert dialogue[0] == f"Situation: {pair.dialogue.situation}"
    assert dialogue[-1] == f"Speaker: {pair.dialogue.turns[-1]}"
    assert pair.dialogue.gold not in user or pair.dialogue.gold in (pair.response_a, pair.response_b)


def test_verdicts_are_read_never_guessed():
    assert parse_verdicts('Response 1 is warmer.\n{"empathy": "1", "relevance": "equal", "fluency": "2"}', ASPECTS) == \
        {"empathy": "1", "relevance": "equal", "fluency": "2"}
    fenced = 'Sure.\n```json\n{"Empathy": 2, "RELEVANCE": "Response 1", "fluency": "tie"}\n```'
    assert parse_verdicts(fenced, ASPECTS) == {"empathy": "2", "relevance": "1", "fluency": "equal"}
    # the last object with the aspects counts; values outside the vocabulary and missing aspects are None
    text = 'e.g. {"empathy": "2"}\nfinal: {"empathy": "both", "relevance": "1"}'
    assert parse_verdicts(text, ASPECTS) == {"empathy": None, "relevance": "1", "fluency": None}
    assert parse_verdicts("Response 1 is clearly better on every aspect.", ASPECTS) == dict.fromkeys(ASPECTS)
    assert parse_verdicts('{"unrelated": 1}', ASPECTS) == dict.fromkeys(ASPECTS)
    # both orders: kept when they agree in system terms, Equal when the verdict followed the position
    shown_a = {"empathy": "1", "relevance": "1", "fluency": "equal"}
    shown_b = {"empathy": "2", "relevance": "1", "fluency": None}
    assert combine(shown_a, shown_b, ASPECTS) == {"empathy": "a", "relevance": "equal", "fluency": None}


def expected_verdicts(study, pair):
    """What the heuristic judge decides for a pair in system terms (it reads the order it is shown)."""
    respond = heuristic_judge()
    shown = {order: json.loads(respond("x", {"messages": judge_messages(pair, study.aspects, order)}).splitlines()[-1])
             for order in ("a", "b")}
    return combine(shown["a"], shown["b"], ASPECTS)


def test_each_pair_is_judged_in_both_orders_and_position_bias_counts_as_equal(study):
    with OpenAIServer(respond=heuristic_judge()) as server:
        summary = run_judge(study, config(server))
        sent = sorted(sample for sample, action in server.log)
    asked = study.asked_pairs()
    assert sent == sorted(request_id(p.pair_id, o) for p in asked for o in "ab")  # each pair, both orders, once
    assert summary.pairs_judged == len(asked) and summary.unreadable == 0
    stored = {(j.pair_id, j.aspect): j.choice for j in study.judgements() if j.annotator == "judge:judge-model"}
    for pair in asked:
        for aspect, choice in expected_verdicts(study, pair).items():
            assert stored[(pair.pair_id, aspect)] == choice
    assert len(study.judge_outputs("judge:judge-model")) == 2 * len(asked)  # the raw answers are kept
    # a judge that always prefers Response 1: every verdict changes with the order, so every pair is Equal
    with OpenAIServer(respond=heuristic_judge(position_bias=1.0)) as server:
        biased = run_judge(study, config(server, model="biased"))
    assert {j.choice for j in study.judgements() if j.annotator == "judge:biased"} == {"equal"}
    assert biased.order_flips == {a: len(asked) for a in ASPECTS}
    assert "changed with the order (counted as equal): empathy" in str(biased)


def test_unreadable_answers_are_recorded_as_such(study):
    with OpenAIServer(respond=heuristic_judge(unreadable=0.3, seed=1)) as server:
        summary = run_judge(study, config(server))
    outputs = study.judge_outputs("judge:judge-model")
    unreadable = [o for o in outputs if all(v is None for v in o["verdicts"].values())]
    assert unreadable and all("cannot decide" in o["raw"] for o in unreadable)
    no_verdict = {o["pair_id"] for o in unreadable}
    stored = {j.pair_id for j in study.judgements() if j.annotator == "judge:judge-model"}
    assert stored == {p.pair_id for p in study.asked_pairs()} - no_verdict  # never guessed
    assert summary.unreadable == 3 * len(no_verdict)
    report = build_report(study)
    assert report["study"]["unreadable_judge_answers"] == len(unreadable)


def test_rate_limits_and_failures_then_retry_failed(study):
    asked = study.asked_pairs()
    limited, broken = request_id(asked[0].pair_id, "a"), request_id(asked[1].pair_id, "b")
    faults = {limited: ["429", "429", "500"], broken: ["400"]}
    with OpenAIServer(faults, respond=heuristic_judge()) as server:
        summary = run_judge(study, config(server))
        assert server.requests_of(limited) == ["429", "429", "500", "ok"]
        assert summary.prompting.failed == 1 and summary.pairs_judged == len(asked) - 1
        assert asked[1].pair_id not in {j.pair_id for j in study.judgements()}
        again = run_judge(study, config(server), retry_failed=True)
        assert server.requests_of(broken) == ["400", "ok"]
    assert again.pairs_judged == len(asked) and again.prompting.failed == 0
    assert sum(1 for s, a in server.log if a == "ok") == 2 * len(asked)  # nothing answered was sent twice


def test_a_killed_judge_loses_and_repeats_nothing(study, monkeypatch, capsys):
    """SIGKILL the judge command in the middle of the run, then run it again: every request answered once."""
    command = [sys.executable, os.path.join(ROOT, "scripts", "ab_test.py"), "judge", "--study", study.folder,
               "--concurrency", "2", "--max_attempts", "2"]
    with OpenAIServer(respond=heuristic_judge(), delay=0.15) as server:
        env = dict(ENV, OPENAI_API_KEY="test", OPENAI_BASE_URL=server.base_url)
        process = subprocess.Popen(command + ["--model", "slow-judge"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        path = results_path(study, "judge:slow-judge")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not os.path.exists(path) or len(latest_records(path)) < 6):
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        done_before = set(latest_records(path))
        assert 6 <= len(done_before) < 2 * len(study.asked_pairs())
        # the same command again (in this process: the same main, without a second start-up)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        main = runpy.run_path(command[1], run_name="imported")["main"]
        main(command[2:] + ["--model", "slow-judge"])
    successes = server.successes()
    every = {request_id(p.pair_id, o) for p in study.asked_pairs() for o in "ab"}
    assert set(latest_records(path)) == every
    answered_twice = {rid for rid, n in successes.items() if n > 1}
    assert answered_twice <= {rid for rid in every if rid not in done_before}  # only answers lost in flight
    assert len(answered_twice) <= 2  # at most the requests in flight at the kill (concurrency 2)
    assert not (done_before & answered_twice)  # nothing recorded was sent again
    assert len({j.pair_id for j in study.judgements() if j.annotator == "judge:slow-judge"}) == len(study.asked_pairs())
    assert f"{len(study.asked_pairs())} of {len(study.asked_pairs())} pairs judged" in capsys.readouterr().out


def test_several_seeds_are_several_annotators_with_their_kappa(study):
    from iamm.llm.judge import judges_for_seeds

    asked = study.asked_pairs()
    for pair in asked:  # one person, to compare the judges with
        verdicts = expected_verdicts(study, pair)
        to_screen = {a: pair.to_screen(v) for a, v in verdicts.items() if v is not None}
        study.save_screen_answers("alice", pair.pair_id, to_screen)
    with OpenAIServer(respond=lambda sid, body: heuristic_judge(position_bias=0.3, seed=body.get("seed", 0))(sid, body)) as server:
        for judge_config in judges_for_seeds(config(server, temperature=0.7), [1, 2, 3]):
            run_judge(study, judge_config)
    report = build_report(study)
    judges = report["groups"]["judges"]
    assert judges["annotators"] == ["judge:judge-model:seed1", "judge:judge-model:seed2", "judge:judge-model:seed3"]
    for aspect in ASPECTS:
        assert judges["aspects"][aspect]["kappa"] is not None and judges["aspects"][aspect]["kappa_pairs"] == len(asked)
        agreement = report["judge_agreement"][aspect]
        assert set(agreement) == set(judges["annotators"]) | {"judges (majority)"}
        # each seeded judge is the person's own rule plus position bias: agreement high, never perfect for all
        assert all(row["agreement"] >= 40 for row in agreement.values())
    assert Study.open(study.folder).annotators()["judge:judge-model:seed2"]["details"]["generation"]["seed"] == 2
