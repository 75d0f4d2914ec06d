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
    estimate_prompt_tokens,
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
            assert latest[sample]["attempts"] + latest[sample]["rate_limited"] == len(requests)
            assert latest[sample]["rate_limited"] == sum(a.startswith("429") for a in requests)  # not attempts
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
        summary = run_prompting(data, out, config(server, concurrency=2))
        assert summary.stopped is None and summary.answered == 6
        assert all(n == 1 for n in server.successes().values()) and len(server.successes()) == 6


def _file_tokens(path):
    return sum(r["usage"]["total_tokens"] for r in latest_records(path).values() if r["status"] == "answered")


def test_token_budget_caps_the_file_across_runs_without_overshoot(tmp_path):
    out = str(tmp_path / "r.jsonl")
    data = rows(30)
    estimate = estimate_prompt_tokens(data[0]["messages"]) + 12  # every row's messages have the same size here
    budget = 4 * estimate + 10
    with OpenAIServer(delay=0.05) as server:
        summary = run_prompting(data, out, config(server, concurrency=8, max_tokens=12, max_total_tokens=budget))
        used = _file_tokens(out)
        assert summary.stopped.startswith(f"token budget of {budget} reached") and summary.pending > 0
        assert used <= budget  # eight workers, yet nothing in flight together could cross it
        assert used + estimate > budget or summary.pending == 0  # and it stopped only when the next could cross
        assert summary.requests_this_run == len(server.log) == summary.answered
        first_run = len(server.log)
        # a re-run with the same budget counts the tokens already in the file
        summary = run_prompting(data, out, config(server, concurrency=8, max_tokens=12, max_total_tokens=budget))
        assert _file_tokens(out) <= budget and _file_tokens(out) + estimate > budget
        assert len(server.log) - first_run == summary.finished_this_run
        # a larger budget continues from there
        summary = run_prompting(data, out, config(server, concurrency=8, max_tokens=12, max_total_tokens=10 ** 6))
        assert summary.stopped is None and summary.answered == 30 and all(n == 1 for n in server.successes().values())
    with pytest.raises(ValueError, match="max_total_tokens needs max_tokens"):
        PromptingConfig(max_total_tokens=100)


def test_after_a_token_budget_stop_the_summary_says_what_the_file_holds_and_what_lets_a_rerun_continue(tmp_path):
    out = str(tmp_path / "r.jsonl")
    data = rows(12)
    estimate = estimate_prompt_tokens(data[0]["messages"]) + 12  # every row's messages have the same size here
    budget = 3 * estimate + 10
    with OpenAIServer(delay=0.05) as server:
        # eight workers: requests still in flight when the budget stops the run add their tokens afterwards
        summary = run_prompting(data, out, config(server, concurrency=8, max_tokens=12, max_total_tokens=budget))
        in_file = _file_tokens(out)
        assert summary.stopped == (f"token budget of {budget} reached ({in_file} tokens in the file; a request can "
                                   f"take up to {estimate} more)")  # the file's count, not the one at the stop
        advice = (f"a re-run with this budget sends nothing: raise --max_total_tokens to at least "
                  f"{in_file + estimate} to continue")
        assert f"stopped early: {summary.stopped}; {advice}" in str(summary)
        assert "re-run the same command" not in str(summary)
        assert json.load(open(summary_path(out)))["to_continue"] == advice
        sent = len(server.log)
        again = run_prompting(data, out, config(server, concurrency=8, max_tokens=12, max_total_tokens=budget))
        assert len(server.log) == sent and again.finished_this_run == 0  # the advice was right: it sends nothing
        assert str(again).endswith(f"stopped early: {summary.stopped}; {advice}")
        # the budget it names lets the next run go on
        more = run_prompting(data, out, config(server, concurrency=1, max_tokens=12, max_total_tokens=in_file + estimate))
        assert more.finished_this_run >= 1 and len(server.log) > sent


def test_estimate_prompt_tokens_is_above_the_usual_four_characters_per_token():
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "x" * 400}]
    assert estimate_prompt_tokens(messages) >= 100 + 2 + 3
    assert estimate_prompt_tokens(messages[:1]) < estimate_prompt_tokens(messages)


def test_rate_limit_storm_pauses_the_pool_and_costs_no_attempts(tmp_path):
    """Every request is refused (429, retry-after-ms 500) for 2 s; 40 samples, 8 workers, 2 attempts each."""
    out = str(tmp_path / "r.jsonl")
    data = rows(40)
    wait_s, storm_s = 0.5, 2.0
    with OpenAIServer(storm_seconds=storm_s, storm_retry_after_ms=int(wait_s * 1000)) as server:
        summary = run_prompting(data, out, config(server, concurrency=8, max_attempts=2))
        storm = [t for (_, action), t in zip(server.log, server.times) if action == "429-storm"]
        log = list(server.log)
    latest = latest_records(out)
    assert (summary.answered, summary.failed, summary.pending) == (40, 0, 0)
    assert all(r["attempts"] == 1 for r in latest.values())  # 429s did not use up attempts
    assert sum(r["rate_limited"] for r in latest.values()) == summary.rate_limited_this_run == len(storm)
    # the first burst (the requests in flight when the first 429 came), then one probe per pause, each sent after
    # the server's wait (no request can come sooner than the first 429 + its wait)
    burst = [t for t in storm if t - storm[0] < wait_s * 0.9]
    probes = storm[len(burst):]
    assert len(burst) <= 8 and len(probes) <= storm_s / wait_s + 1
    assert all(b - a >= wait_s * 0.95 for a, b in zip([storm[0]] + probes, probes))
    # (independent retries would have sent about 8 x 2 / 0.5 = 32 requests into the storm)
    assert len(storm) <= 8 + 5 and len(log) == len(storm) + 40


def test_rate_limits_that_do_not_end_stop_the_run_and_leave_samples_pending(tmp_path):
    out = str(tmp_path / "r.jsonl")
    data = rows(6)
    with OpenAIServer(storm_seconds=1.2, storm_retry_after_ms=100) as server:
        summary = run_prompting(data, out, config(server, concurrency=3, rate_limit_max_wait=0.4))
        assert summary.stopped.startswith("rate limited for more than 0 s without an answer")
        assert (summary.answered, summary.failed, summary.pending) == (0, 0, 6)
        assert "re-run the same command to continue" in str(summary)
        while time.monotonic() - server.storm_started < 1.25:
            time.sleep(0.05)
        summary = run_prompting(data, out, config(server, concurrency=3, rate_limit_max_wait=0.4))
        assert (summary.answered, summary.failed) == (6, 0)


def test_used_up_quota_stops_at_once_and_retry_after_ms_is_honoured(tmp_path):
    out = str(tmp_path / "r.jsonl")
    with OpenAIServer({"s0": ["429-quota"]}) as server:
        summary = run_prompting(rows(4), out, config(server, concurrency=1))
        assert "quota is used up" in summary.stopped and "insufficient_quota" in summary.stopped
        assert server.log == [("s0", "429-quota")] and (summary.failed, summary.pending) == (0, 4)
    out = str(tmp_path / "ms.jsonl")
    with OpenAIServer({"s0": ["429-ms"], "s1": ["400"]}, retry_after=0.05) as server:  # retry-after: 30, -ms: 50
        started = time.monotonic()
        summary = run_prompting(rows(2), out, config(server, concurrency=1, retry_after_max=60.0),
                                retry_command="python scripts/prompt_openai.py ... --retry_failed true")
        assert time.monotonic() - started < 10 and server.requests_of("s0") == ["429-ms", "ok"]
    assert (summary.answered, summary.failed) == (1, 1)
    assert "1 samples failed; to send them again: python scripts/prompt_openai.py ... --retry_failed true" in str(summary)


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


def _prompt_script_error(argv):
    import runpy

    main = runpy.run_path(os.path.join(ROOT, "scripts", "prompt_openai.py"), run_name="imported")["main"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value.code)
    assert exit_info.value.code not in (0, None) and "\n" not in message and message.startswith("prompt_openai: ")
    return message


def test_prompt_script_user_mistakes_are_one_line_and_create_nothing(tmp_path, monkeypatch):
    from datasets import Dataset

    from iamm.llm.instructions import INSTRUCTION_FEATURES, instruction_row, save_instruction_split

    row = instruction_row({"conv_id": "c0", "turn": 1, "situation": "s", "context": ["hello"], "emotion": "sad",
                           "target": "hi"}, [("word", 0.9)])
    save_instruction_split(Dataset.from_list([row], features=INSTRUCTION_FEATURES), str(tmp_path / "instr"), "test")
    out = tmp_path / "out" / "gpt.jsonl"
    base = ["--output_file", str(out), "--base_url", "http://127.0.0.1:9/v1"]
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    assert "no instruction data" in _prompt_script_error(base + ["--instructions", str(tmp_path / "nowhere")])
    assert "split(s) ['valid'] not built" in _prompt_script_error(
        base + ["--instructions", str(tmp_path / "instr"), "--split", "valid"])
    assert "max_total_tokens needs max_tokens" in _prompt_script_error(
        base + ["--instructions", str(tmp_path / "instr"), "--max_total_tokens", "1000"])
    monkeypatch.delenv("OPENAI_API_KEY")
    assert "no API key" in _prompt_script_error(base + ["--instructions", str(tmp_path / "instr")])
    assert not out.exists() and not out.parent.exists()
    # a results file with a garbage line is reported by line and left as it was
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    out.parent.mkdir()
    content = json.dumps({"__header__": {"format": 1}}) + "\nnot json\n"
    out.write_text(content)
    assert "gpt.jsonl, line 2: not a JSON record" in _prompt_script_error(base + ["--instructions", str(tmp_path / "instr")])
    assert out.read_text() == content


def test_prompt_script_retry_command():
    from iamm.llm.openai_prompting import retry_command

    assert retry_command("scripts/prompt_openai.py", ["--output_file", "a b.jsonl", "--retry_failed", "false"]) == \
        "python scripts/prompt_openai.py --output_file 'a b.jsonl' --retry_failed true"
