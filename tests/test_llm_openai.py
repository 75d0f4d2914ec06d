"""Prompting an OpenAI-compatible server: our retries (429 with retry-after, 5xx, timeouts, dropped connections,
malformed replies), budgets, resumable results (interrupt, kill), and the cost summary, against a local server."""

import email.utils
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from iamm.llm.openai_prompting import (
    PromptingConfig,
    latest_records,
    retry_after_seconds,
    retry_delay,
    run_prompting,
    summary_path,
)
from tests.helpers.openai_server import OpenAIServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rows(n):
    return [{"id": f"s{i}", "messages": [{"role": "system", "content": "Be kind."},
                                         {"role": "user", "content": f"Dialogue context: hello number {i}"}],
             "plain_messages": [{"role": "user", "content": f"plain {i}"}]} for i in range(n)]


def config(server, **kwargs):
    defaults = dict(base_url=server.base_url, api_key="test", request_timeout=3.0, backoff_initial=0.01,
                    backoff_max=0.05, max_attempts=4, concurrency=4)
    return PromptingConfig(**{**defaults, **kwargs})


def test_retry_after_and_backoff():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= retry_after_seconds({"retry-after": date}, now=now) <= 31
    assert retry_after_seconds({"retry-after": email.utils.formatdate(now - 60, usegmt=True)}, now=now) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None and retry_after_seconds({}) is None

    class Response:
        headers = {"retry-after": "500"}

    class Error(Exception):
        response = Response()

    cfg = PromptingConfig(backoff_initial=1.0, backoff_max=8.0, retry_after_max=30.0)
    assert retry_delay(Error(), 1, cfg, random.Random(0)) == 30.0  # the server's wait, capped
    rng = random.Random(0)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [retry_delay(ValueError(), attempt, cfg, rng) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays) and len(set(delays)) > 1  # equal jitter


FAULTS = {
    "s0": ["429", "500"], "s1": ["429-date"], "s2": ["503", "503"], "s3": ["slow"], "s4": ["drop"],
    "s5": ["malformed"], "s6": ["no-choices", "drop"], "s7": ["400"], "s8": ["500"] * 10, "s9": [],
}


@pytest.mark.slow
def test_faults_end_answered_or_failed_and_nothing_is_sent_after_a_success(tmp_path):
    out = str(tmp_path / "results.jsonl")
    data = rows(12)
    with OpenAIServer(FAULTS, slow_seconds=2.5) as server:  # slow: past the 1 s timeout
        summary = run_prompting(data, out, config(server, request_timeout=1.0), split="valid")
        latest = latest_records(out)
        assert set(latest) == {r["id"] for r in data}
        answered = {i for i, r in latest.items() if r["status"] == "answered"}
        assert {i for i, r in latest.items() if r["status"] == "failed"} == {"s7", "s8"}
        successes = server.successes()
        for sample in answered:
            requests = server.requests_of(sample)
            assert successes[sample] == 1 and requests[-1] == "ok", (sample, requests)
            assert latest[sample]["attempts"] == len(requests)
            assert latest[sample]["emotion"] == "sad" and latest[sample]["response"].startswith("I am sorry")
        assert server.requests_of("s7") == ["400"]  # not retried
        assert server.requests_of("s8") == ["500"] * 4  # max_attempts
        assert "BadRequestError" in latest["s7"]["error"] and "InternalServerError" in latest["s8"]["error"]
        assert server.requests_of("s3") == ["slow", "ok"]  # the slow reply timed out and was sent again
        assert (summary.answered, summary.failed, summary.pending) == (10, 2, 0)

        # a re-run sends nothing; with retry_failed, only the failed ones (now the server answers them)
        before = len(server.log)
        assert run_prompting(data, out, config(server), split="valid").finished_this_run == 0
        assert len(server.log) == before
        summary = run_prompting(data, out, config(server, max_attempts=7), split="valid", retry_failed=True)
        assert sorted(sid for sid, _ in server.log[before:]) == ["s7"] + ["s8"] * 7  # s8: 6 more 500s, then ok
        assert all(latest_records(out)[i]["status"] == "answered" for i in ("s7", "s8"))
        assert server.successes()["s7"] == server.successes()["s8"] == 1
        assert (summary.answered, summary.failed) == (12, 0)
        # tokens and cost come from the server's usage
        usage = [r["usage"] for r in latest_records(out).values() if r["status"] == "answered"]
        prompt, completion = sum(u["prompt_tokens"] for u in usage), sum(u["completion_tokens"] for u in usage)
        assert (summary.prompt_tokens, summary.completion_tokens) == (prompt, completion) and prompt > 0
        assert summary.cost_usd == pytest.approx((prompt * 0.5 + completion * 1.5) / 1e6)
        written = json.load(open(summary_path(out)))
        assert written["answered"] == 12 and written["cost_usd"] == pytest.approx(summary.cost_usd)


def test_other_settings_are_refused_and_plain_variant_sends_plain_messages(tmp_path):
    out = str(tmp_path / "r.jsonl")
    seen = []
    with OpenAIServer(answer=lambda sid: "Emotion: content\nResponse: ok") as server:
        run_prompting(rows(2), out, config(server, temperature=0.0), variant="plain")
        with pytest.raises(ValueError, match=r"made with other settings \(generation: file has \{'temperature': 0.0\}"):
            run_prompting(rows(2), out, config(server, temperature=0.7), variant="plain")
        with pytest.raises(ValueError, match="variant: file has 'plain', this run 'associations'"):
            run_prompting(rows(2), out, config(server, temperature=0.0), variant="associations")
        changed = rows(2)
        changed[0]["plain_messages"] = [{"role": "user", "content": "something else"}]
        with pytest.raises(ValueError, match="the recorded request of s0 had other messages"):
            run_prompting(changed, out, config(server, temperature=0.0), variant="plain")
        seen = server.log
    assert len(seen) == 2


def test_budgets_stop_cleanly_and_a_rerun_continues(tmp_path):
    out = str(tmp_path / "r.jsonl")
    data = rows(6)
    with OpenAIServer({"s0": ["429"]}) as server:
        summary = run_prompting(data, out, config(server, concurrency=1, max_requests=3))
        assert summary.stopped == "request budget of 3 reached" and summary.requests_this_run == 3
        assert len(server.log) == 3 and summary.answered == 2 and summary.pending == 4 and summary.failed == 0
        assert "stopped early: request budget of 3 reached" in str(summary)
        # the token budget: each answer here costs 6 prompt + 10 completion tokens (the server counts words)
        summary = run_prompting(data, out, config(server, concurrency=1, max_total_tokens=20))
        assert summary.stopped == "token budget of 20 reached" and summary.finished_this_run == 2
        summary = run_prompting(data, out, config(server, concurrency=2))
        assert summary.stopped is None and summary.answered == 6
        assert all(n == 1 for n in server.successes().values()) and len(server.successes()) == 6


def test_keyboard_interrupt_keeps_answers_and_resume_sends_only_the_rest(tmp_path):
    out = str(tmp_path / "r.jsonl")
    data = rows(10)

    def interrupt_after_three(record, seen=[]):
        seen.append(record["id"])
        if len(seen) == 3:
            raise KeyboardInterrupt

    with OpenAIServer(delay=0.05) as server:
        with pytest.raises(KeyboardInterrupt):
            run_prompting(data, out, config(server, concurrency=2), on_record=interrupt_after_three)
        done = set(latest_records(out))
        assert len(done) >= 3 and len(done) < 10  # the ones in flight were finished, nothing new was started
        assert json.load(open(summary_path(out)))["stopped"] == "interrupted"
        before = len(server.log)
        run_prompting(data, out, config(server, concurrency=2))
        resent = [sid for sid, _ in server.log[before:]]
        assert sorted(resent) == sorted(set(r["id"] for r in data) - done)
        assert all(n == 1 for n in server.successes().values())


@pytest.mark.slow
def test_killed_script_resumes_without_resending(tmp_path, sample_samples):
    from datasets import Dataset

    from iamm.llm.instructions import INSTRUCTION_FEATURES, instruction_row, save_instruction_split

    samples = [sample_samples["valid"][i] for i in range(12)]
    table = Dataset.from_list([instruction_row(s, [("word", 0.9)]) for s in samples], features=INSTRUCTION_FEATURES)
    save_instruction_split(table, str(tmp_path / "instr"), "valid")
    out = tmp_path / "gpt.jsonl"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OPENAI_API_KEY="test", OMP_NUM_THREADS="1")
    with OpenAIServer(delay=0.3) as server:
        cmd = [sys.executable, os.path.join(ROOT, "scripts", "prompt_openai.py"), "--instructions", str(tmp_path / "instr"),
               "--split", "valid", "--output_file", str(out), "--base_url", server.base_url, "--concurrency", "1",
               "--backoff_initial", "0.01", "--request_timeout", "5"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 1 + 3):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        answered_before = set(latest_records(str(out)))
        assert 3 <= len(answered_before) < 12
        before = len(server.log)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "12/12 answered, 0 failed, 0 not sent yet" in proc.stdout and "estimated cost $" in proc.stdout
        resent = {sid for sid, _ in server.log[before:]}
        assert not resent & answered_before
        assert len(resent) == 12 - len(answered_before)
        # the request killed in flight (if any) was sent again; every other sample exactly once
        assert sum(server.successes().values()) <= 13
        ids = {s["conv_id"] + "#" + str(s["turn"]) for s in samples}
        assert set(latest_records(str(out))) == ids
