"""Prompt an OpenAI-compatible chat model with IAMM_large instructions: bounded concurrency, our own retries,
request and token budgets, and a resumable JSONL of results.

Every row's `messages` (or `plain_messages`, the baseline without associated words) goes to
`{base_url}/chat/completions` through the `openai` client, created with `max_retries=0` so that the retries are
ours (:func:`retry_delay`):

* rate limits (HTTP 429) pause the WHOLE pool, not just the worker that got one: no request is sent until the
  server's `retry-after-ms` / `retry-after` (seconds or an HTTP date, capped at `retry_after_max`) has passed,
  plus up to `rate_limit_jitter` of it at random (never less than the server asked); without such a header, the
  pause is exponential back-off over the pool's consecutive 429s. Then one request goes alone as a probe; when it
  is answered, the pool runs at full concurrency again, when it gets a 429, the pool pauses again. A 429 does not
  count as one of a sample's `max_attempts`: rate limits only delay samples. If the pool stays rate limited for
  longer than `rate_limit_max_wait`, or the 429 says the account's quota is used up (`insufficient_quota`, which
  waiting does not cure), the run stops, leaving the samples not yet answered for a later run;
* retried, counted as attempts: HTTP 408, 409 and 5xx, timeouts, connection errors (a dropped connection) and
  unreadable replies (malformed JSON, a reply without `choices`), up to `max_attempts` sends per sample, after
  the server's retry-after or else exponential back-off `min(backoff_max, backoff_initial * 2**(attempt-1))`
  with "equal jitter" (half of it fixed, half uniformly random);
* not retried: other 4xx (bad request, authentication, unknown model, ...): the sample is recorded as failed.

Results are appended to a JSONL file as they arrive, one line per finished sample (written and fsynced at once):

    {"id": ..., "status": "answered", "output": <raw answer>, "emotion": <label or null>, "response": ...,
     "valid_label": ..., "finish_reason": ..., "usage": {"prompt_tokens", "completion_tokens", "total_tokens"},
     "attempts": n, "rate_limited": n, "prompt_sha": ...}
    {"id": ..., "status": "failed", "error": "<type>: <message of the last error>", "attempts": n, ...}

so Ctrl-C or a crash loses nothing that was answered, and a re-run sends only the samples without a record (and the
failed ones again with `retry_failed=True`; the newest record of an id is the one that counts). The file's header
holds the model, variant, split and generation settings; a file written with others is refused. The summary says
how many samples failed and the command that sends them again.

Budgets: `max_requests` counts every HTTP request sent in this run (retries and 429s included).
`max_total_tokens` caps the tokens of the whole results file, over all runs: the tokens its records already used
count, and a request is only sent when the tokens used, plus those reserved by the requests in flight, plus its
own upper estimate (:func:`estimate_prompt_tokens` + `max_tokens`, which a token budget therefore needs) stay
within the budget (a request that only the reservations in flight keep out waits for them); the run stops when the
tokens used plus the next request's estimate exceed it. When a budget is reached, no new request is sent, requests in flight are completed and
recorded, samples still waiting are left for a later run, and the summary says why it stopped and how to continue
(after the token budget: the tokens in the file, and the budget that lets a re-run send the next request).

The sample id travels in the `X-Sample-Id` request header (servers ignore unknown headers), which lets a proxy or
a test server see which sample a request is for.
"""

import email.utils
import hashlib
import json
import logging
import os
import random
import shlex
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import openai

from .instructions import parse_answer
from .records import open_records, read_jsonl

logger = logging.getLogger(__name__)

SAMPLE_ID_HEADER = "X-Sample-Id"
RESULTS_FORMAT = 1
VARIANTS = {"associations": "messages", "plain": "plain_messages"}
RETRYABLE_STATUS = {408, 409, 429}
RATE_LIMIT_STATUS = 429
QUOTA_ERROR_CODE = "insufficient_quota"  # OpenAI's 429 for a used-up quota: waiting does not help


@dataclass
class PromptingConfig:
    """How requests are sent: model and server, generation parameters, concurrency, retries, budgets, prices.

    Args:
        model: the chat model name.
        base_url / api_key: the server (default: env `OPENAI_BASE_URL`, else OpenAI) and key (env `OPENAI_API_KEY`).
        temperature, top_p, max_tokens, seed, presence_penalty, frequency_penalty: passed through when set.
        concurrency: requests in flight at once (threads).
        request_timeout: seconds before one request is abandoned (and retried).
        max_attempts: sends per sample before it is recorded as failed.
        backoff_initial / backoff_max: exponential back-off, seconds (with jitter).
        retry_after_max: a server's `retry-after` is honoured up to this many seconds.
        rate_limit_jitter: a rate-limit pause lasts the server's wait times 1 + uniform(0, this).
        rate_limit_max_wait: stop the run when the pool has been rate limited this many seconds without an answer.
        max_requests: request budget of this run; max_total_tokens: token budget of the results file (None:
            unlimited; needs `max_tokens`).
        input_price_per_1m / output_price_per_1m: USD per million prompt/completion tokens for the cost estimate.
            The defaults are an ASSUMPTION: OpenAI's list price of gpt-3.5-turbo-0125 (0.50 / 1.50); check yours.
    """

    model: str = field(default="gpt-3.5-turbo", metadata={"help": "Chat model name."})
    base_url: Optional[str] = field(default=None, metadata={"help": "API base URL (default: env OPENAI_BASE_URL, else OpenAI)."})
    api_key: Optional[str] = field(default=None, metadata={"help": "API key (default: env OPENAI_API_KEY)."})
    temperature: Optional[float] = field(default=None, metadata={"help": "Sampling temperature (server default if unset)."})
    top_p: Optional[float] = field(default=None, metadata={"help": "Nucleus sampling (server default if unset)."})
    max_tokens: Optional[int] = field(default=None, metadata={"help": "Longest answer in tokens (server default if unset)."})
    seed: Optional[int] = field(default=None, metadata={"help": "Sampling seed, where the server supports it."})
    presence_penalty: Optional[float] = field(default=None, metadata={"help": "Presence penalty (passed through)."})
    frequency_penalty: Optional[float] = field(default=None, metadata={"help": "Frequency penalty (passed through)."})
    concurrency: int = field(default=4, metadata={"help": "Requests in flight at once."})
    request_timeout: float = field(default=60.0, metadata={"help": "Seconds before a request is abandoned and retried."})
    max_attempts: int = field(default=6, metadata={"help": "Sends per sample before it is recorded as failed."})
    backoff_initial: float = field(default=1.0, metadata={"help": "First back-off, seconds (doubles per attempt)."})
    backoff_max: float = field(default=60.0, metadata={"help": "Longest back-off, seconds."})
    retry_after_max: float = field(default=120.0, metadata={"help": "Honour a server's retry-after up to this many seconds."})
    rate_limit_jitter: float = field(default=0.2, metadata={"help": "Rate-limit pauses last the server's wait x (1 + uniform(0, this))."})
    rate_limit_max_wait: float = field(default=900.0, metadata={"help": "Stop when rate limited this many seconds without an answer."})
    max_requests: Optional[int] = field(default=None, metadata={"help": "Stop after sending this many requests (retries count)."})
    max_total_tokens: Optional[int] = field(default=None, metadata={
        "help": "Token budget of the output file (tokens already in it count); needs --max_tokens."})
    input_price_per_1m: float = field(default=0.50, metadata={"help": "USD per 1M prompt tokens (default: gpt-3.5-turbo-0125, an assumption)."})
    output_price_per_1m: float = field(default=1.50, metadata={"help": "USD per 1M completion tokens (default: gpt-3.5-turbo-0125, an assumption)."})

    def __post_init__(self):
        for name in ("concurrency", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("request_timeout", "backoff_initial", "backoff_max", "retry_after_max", "rate_limit_jitter",
                     "rate_limit_max_wait", "input_price_per_1m", "output_price_per_1m"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_requests", "max_total_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {getattr(self, name)}")
        if self.max_total_tokens is not None and self.max_tokens is None:
            raise ValueError("max_total_tokens needs max_tokens (the longest answer): without it a request's cost has "
                             "no bound and the budget could be crossed")

    def generation_kwargs(self) -> Dict[str, Any]:
        """The generation parameters that are set (sent with every request, and part of the results' header)."""
        names = ("temperature", "top_p", "max_tokens", "seed", "presence_penalty", "frequency_penalty")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def make_client(self) -> openai.OpenAI:
        """An `openai.OpenAI` client without its own retries (`max_retries=0`) and with our timeout."""
        api_key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise ValueError("no API key: pass --api_key or set OPENAI_API_KEY (any string for a local server)")
        return openai.OpenAI(base_url=self.base_url or os.environ.get("OPENAI_BASE_URL") or None, api_key=api_key,
                             max_retries=0, timeout=self.request_timeout)


# ---- retries ----------------------------------------------------------------------------------------------------
def retry_after_seconds(headers: Optional[Mapping[str, str]], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from `retry-after-ms`, or `retry-after` (a number of seconds or an HTTP date); None if absent
    or unreadable. A date in the past gives 0."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_retryable(error: BaseException) -> bool:
    """Whether a failed request is worth sending again (see the module docstring)."""
    if isinstance(error, openai.APIStatusError):
        return error.status_code in RETRYABLE_STATUS or error.status_code >= 500
    if isinstance(error, (openai.APIConnectionError, openai.APIResponseValidationError, MalformedReply)):
        return True  # APITimeoutError is an APIConnectionError
    return False


def retry_delay(error: BaseException, attempt: int, config: PromptingConfig, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): the server's retry-after (capped), or
    exponential back-off with equal jitter."""
    response = getattr(error, "response", None)
    server = retry_after_seconds(getattr(response, "headers", None))
    if server is not None:
        return min(server, config.retry_after_max)
    base = min(config.backoff_max, config.backoff_initial * 2 ** (attempt - 1))
    return base / 2 + rng.uniform(0, base / 2)


class MalformedReply(Exception):
    """The server answered, but not with a readable chat completion."""


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:500]}"


# ---- budgets ----------------------------------------------------------------------------------------------------
def estimate_prompt_tokens(messages: Sequence[Mapping[str, str]]) -> int:
    """An upper estimate of a request's prompt tokens without the model's tokenizer: a third of each message's
    UTF-8 bytes, rounded up (English text averages about four characters per token), plus 4 per message and 3 for
    the reply's priming, as OpenAI's chat format adds."""
    return 3 + sum(4 + -(-len(str(m.get("content", "")).encode("utf-8")) // 3) for m in messages)


class Budget:
    """Thread-safe request and token counters with optional limits; `stopped` names the limit that was reached.

    Tokens: `used_tokens` starts at the tokens already spent (`spent_tokens`, those of the results file); a request
    reserves its estimate before it is sent (:meth:`acquire_request`) and gives it back when its usage is known
    (:meth:`settle`), so requests in flight together can never cross `max_total_tokens`.
    """

    def __init__(self, max_requests: Optional[int] = None, max_total_tokens: Optional[int] = None,
                 spent_tokens: int = 0):
        self.max_requests, self.max_total_tokens = max_requests, max_total_tokens
        self.requests = self.prompt_tokens = self.completion_tokens = self.reserved = 0
        self.spent_tokens = spent_tokens
        self.stopped: Optional[str] = None
        self.token_budget_reached = False  # the token budget stopped the run (a re-run needs a larger one)
        self._cond = threading.Condition()

    @property
    def used_tokens(self) -> int:
        return self.spent_tokens + self.prompt_tokens + self.completion_tokens

    def acquire_request(self, estimate: int = 0, stop: Optional[threading.Event] = None) -> bool:
        """Count one request about to be sent and reserve `estimate` tokens; False (nothing counted) once a budget
        is used up: the request budget, or the tokens used so far plus `estimate` exceed the token budget. When
        only the reservations of requests in flight are in the way, wait for them to finish (or `stop`)."""
        with self._cond:
            while True:
                if self.max_requests is not None and self.requests >= self.max_requests:
                    self.stopped = self.stopped or f"request budget of {self.max_requests} reached"
                if self.max_total_tokens is not None and self.used_tokens + estimate > self.max_total_tokens:
                    if not self.stopped:  # (the counts are those of the whole file once the run ends: see run_prompting)
                        self.stopped = f"token budget of {self.max_total_tokens} reached"
                        self.token_budget_reached = True
                if self.stopped or (stop is not None and stop.is_set()):
                    return False
                if (self.max_total_tokens is None
                        or self.used_tokens + self.reserved + estimate <= self.max_total_tokens):
                    self.requests += 1
                    self.reserved += estimate
                    return True
                self._cond.wait(0.05)

    def settle(self, estimate: int, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """A request reserved with `estimate` finished, having used these tokens (0 when it failed)."""
        with self._cond:
            self.reserved -= estimate
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self._cond.notify_all()

    def stop(self, reason: str) -> None:
        with self._cond:
            self.stopped = self.stopped or reason
            self._cond.notify_all()


class RateLimitGate:
    """The pool's shared rate-limit state: a pause every worker waits out, then one probe request at a time.

    :meth:`enter` blocks a worker until it may send; :meth:`rate_limited`, :meth:`answered` and :meth:`released`
    report how its request ended. See the module docstring for the policy.
    """

    POLL = 0.05

    def __init__(self, config: PromptingConfig, rng: random.Random):
        self.config, self.rng = config, rng
        self._cond = threading.Condition()
        self.limited_since: Optional[float] = None  # monotonic time of the first 429 since the last answer
        self.paused_at = float("-inf")
        self.resume_at = 0.0
        self.probing = False
        self.strikes = 0
        self.responses = 0  # 429s received
        self.pauses = 0

    def enter(self, stop: threading.Event) -> Optional[float]:
        """Wait until a request may be sent; its send time, or None when the run stops meanwhile."""
        with self._cond:
            while not stop.is_set():
                now = time.monotonic()
                if self.limited_since is None:
                    return now
                if now >= self.resume_at and not self.probing:
                    self.probing = True
                    return now
                self._cond.wait(min(self.POLL, max(0.0, self.resume_at - now)) or self.POLL)
            return None

    def rate_limited(self, sent_at: float, server_wait: Optional[float]) -> Optional[str]:
        """A request sent at `sent_at` got a 429; pause the pool. Returns why the run must stop, if it must."""
        with self._cond:
            now = time.monotonic()
            self.responses += 1
            self.limited_since = now if self.limited_since is None else self.limited_since
            self.probing = False
            if sent_at >= self.paused_at:  # a new signal, not a request that was already in flight at the last one
                self.strikes += 1
                self.pauses += 1
                if server_wait is not None:
                    wait_s = min(server_wait, self.config.retry_after_max)
                    wait_s *= 1 + self.rng.uniform(0, self.config.rate_limit_jitter)
                else:
                    base = min(self.config.backoff_max, self.config.backoff_initial * 2 ** (self.strikes - 1))
                    wait_s = base / 2 + self.rng.uniform(0, base / 2)
                self.paused_at, self.resume_at = now, max(self.resume_at, now + wait_s)
            elif server_wait is not None:
                self.resume_at = max(self.resume_at, now + min(server_wait, self.config.retry_after_max))
            self._cond.notify_all()
            if now - self.limited_since > self.config.rate_limit_max_wait:
                return (f"rate limited for more than {self.config.rate_limit_max_wait:.0f} s without an answer "
                        f"({self.responses} responses 429)")
            return None

    def answered(self) -> None:
        """A request was answered: the pool runs at full concurrency again."""
        with self._cond:
            self.limited_since, self.probing, self.strikes = None, False, 0
            self._cond.notify_all()

    def released(self) -> None:
        """A request ended otherwise (another error): if it was the probe, the next waiting worker probes."""
        with self._cond:
            self.probing = False
            self._cond.notify_all()


# ---- one sample -------------------------------------------------------------------------------------------------
def prompt_sha(messages: Sequence[Mapping[str, str]]) -> str:
    """A hash of the messages of a request (a recorded answer must belong to the same prompt)."""
    return hashlib.sha1(json.dumps(list(map(dict, messages)), ensure_ascii=False).encode("utf-8")).hexdigest()


def _usage(completion) -> Dict[str, int]:
    usage = getattr(completion, "usage", None)
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    output = int(getattr(usage, "completion_tokens", 0) or 0)
    return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}


def _is_rate_limit(error: BaseException) -> bool:
    return isinstance(error, openai.APIStatusError) and error.status_code == RATE_LIMIT_STATUS


def answer_fields(text: str) -> Dict[str, Any]:
    """The fields an IAMM_large answer adds to its record: the parsed `emotion`, `response` and `valid_label`."""
    parsed = parse_answer(text)
    return {"emotion": parsed.emotion, "response": parsed.response, "valid_label": parsed.valid_label}


def request_sample(client: openai.OpenAI, sample_id: str, messages: Sequence[Mapping[str, str]],
                   config: PromptingConfig, budget: Budget, stop: threading.Event, rng: random.Random,
                   gate: Optional[RateLimitGate] = None,
                   parse: Callable[[str], Dict[str, Any]] = answer_fields) -> Optional[Dict[str, Any]]:
    """Send one sample until it is answered, fails for good, or the run stops; its record, or None if it was left
    for a later run (a budget was reached, the pool gave up on rate limits, or the run was interrupted). An
    answer's record holds the raw text (`output`) and the fields `parse(text)` returns."""
    gate = gate or RateLimitGate(config, rng)
    attempts = rate_limited = 0
    started = time.monotonic()
    base = {"id": sample_id, "prompt_sha": prompt_sha(messages)}
    estimate = estimate_prompt_tokens(messages) + (config.max_tokens or 0)
    while True:
        sent_at = gate.enter(stop)
        if sent_at is None:
            return None
        if not budget.acquire_request(estimate, stop):
            gate.released()
            return None
        try:
            completion = client.chat.completions.create(
                model=config.model, messages=list(map(dict, messages)), extra_headers={SAMPLE_ID_HEADER: sample_id},
                **config.generation_kwargs())
            try:
                choice = completion.choices[0]
                text = choice.message.content
            except (AttributeError, IndexError, KeyError, TypeError) as e:
                raise MalformedReply(f"the reply has no choices[0].message ({type(e).__name__}: {e})") from None
            if not isinstance(text, str):
                raise MalformedReply(f"choices[0].message.content is {type(text).__name__}, not text")
        except Exception as error:  # noqa: BLE001 - every error ends as a retry or a failed record
            budget.settle(estimate)
            if _is_rate_limit(error):
                rate_limited += 1
                if getattr(error, "code", None) == QUOTA_ERROR_CODE:
                    gate.released()
                    budget.stop(f"the account's quota is used up (429 {QUOTA_ERROR_CODE}: "
                                f"{getattr(error, 'message', error)}); check the plan and billing")
                    stop.set()
                    return None
                server_wait = retry_after_seconds(getattr(getattr(error, "response", None), "headers", None))
                give_up = gate.rate_limited(sent_at, server_wait)
                if give_up:
                    budget.stop(give_up)
                    stop.set()
                    return None
                logger.debug("%s: rate limited; the pool waits", sample_id)
                continue
            gate.released()
            attempts += 1
            if isinstance(error, ValueError) and not isinstance(error, MalformedReply):
                error = MalformedReply(f"unreadable reply ({_describe(error)})")  # e.g. a JSON decode error
            if not is_retryable(error) or attempts >= config.max_attempts:
                return {**base, "status": "failed", "error": _describe(error), "attempts": attempts,
                        "rate_limited": rate_limited, "retryable": is_retryable(error)}
            delay = retry_delay(error, attempts, config, rng)
            logger.info("%s: attempt %d failed (%s); retrying in %.2fs", sample_id, attempts, _describe(error), delay)
            if stop.wait(delay):
                return None
            continue
        attempts += 1
        gate.answered()
        usage = _usage(completion)
        budget.settle(estimate, usage["prompt_tokens"], usage["completion_tokens"])
        return {**base, "status": "answered", "output": text, **parse(text),
                "finish_reason": getattr(choice, "finish_reason", None),
                "usage": usage, "attempts": attempts, "rate_limited": rate_limited,
                "elapsed_s": round(time.monotonic() - started, 3)}


# ---- a whole run ------------------------------------------------------------------------------------------------
@dataclass
class PromptingSummary:
    """What a run did and what the results file holds (totals over the whole file, all runs)."""

    samples: int = 0
    answered: int = 0
    failed: int = 0
    pending: int = 0
    finished_this_run: int = 0
    requests_this_run: int = 0
    rate_limited_this_run: int = 0
    tokens_this_run: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    price_per_1m: Dict[str, float] = field(default_factory=dict)
    stopped: Optional[str] = None
    to_continue: str = "re-run the same command to continue"
    retry_command: str = "run_prompting(..., retry_failed=True)"

    def __str__(self) -> str:
        lines = [f"{self.answered}/{self.samples} answered, {self.failed} failed, {self.pending} not sent yet",
                 f"this run: {self.requests_this_run} requests ({self.rate_limited_this_run} rate limited), "
                 f"{self.finished_this_run} samples finished, {self.tokens_this_run} tokens",
                 f"tokens in the file: {self.prompt_tokens} prompt + {self.completion_tokens} completion; "
                 f"estimated cost ${self.cost_usd:.4f} at ${self.price_per_1m.get('input', 0):.2f}/"
                 f"${self.price_per_1m.get('output', 0):.2f} per 1M tokens"]
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}; {self.to_continue}")
        if self.failed:
            lines.append(f"{self.failed} samples failed; to send them again: {self.retry_command}")
        return "\n".join(lines)


def _record_tokens(record: Mapping[str, Any]) -> int:
    usage = record.get("usage") or {}
    return int(usage.get("prompt_tokens", 0) or 0) + int(usage.get("completion_tokens", 0) or 0)


def latest_records(path: str) -> Dict[str, Dict[str, Any]]:
    """The newest record of each sample id in a results file (an answer is never followed by another record)."""
    _, records = read_jsonl(path)
    latest: Dict[str, Dict[str, Any]] = {}
    for record in records:
        latest[record["id"]] = record
    return latest


def summarize(path: str, ids: Sequence[str], config: PromptingConfig,
              latest: Optional[Mapping[str, Dict[str, Any]]] = None) -> PromptingSummary:
    """Counts, token totals and the cost estimate of a results file, for the samples `ids` (`latest`: the file's
    :func:`latest_records`, when the caller has read them)."""
    latest = latest_records(path) if latest is None else latest
    summary = PromptingSummary(samples=len(ids),
                               price_per_1m={"input": config.input_price_per_1m, "output": config.output_price_per_1m})
    for sample in ids:
        status = latest.get(sample, {}).get("status")
        summary.answered += status == "answered"
        summary.failed += status == "failed"
        summary.pending += status is None
    for record in latest.values():
        summary.prompt_tokens += record.get("usage", {}).get("prompt_tokens", 0)
        summary.completion_tokens += record.get("usage", {}).get("completion_tokens", 0)
    summary.cost_usd = (summary.prompt_tokens * config.input_price_per_1m
                        + summary.completion_tokens * config.output_price_per_1m) / 1e6
    return summary


def run_prompting(
    rows: Sequence[Mapping[str, Any]],
    output_file: str,
    config: PromptingConfig,
    variant: str = "associations",
    split: str = "test",
    retry_failed: bool = False,
    overwrite: bool = False,
    client: Optional[openai.OpenAI] = None,
    on_record: Optional[Callable[[Dict[str, Any]], None]] = None,
    seed: int = 0,
    retry_command: Optional[str] = None,
) -> PromptingSummary:
    """Send every instruction row that has no record yet (and failed ones with `retry_failed`), appending results
    as they come (:func:`run_requests` with the rows' `messages` or `plain_messages`).

    Args:
        rows: instruction rows (:data:`iamm.llm.instructions.INSTRUCTION_FEATURES`; `id` and `messages` or
            `plain_messages` are used).
        output_file: the results JSONL (continued if it exists with the same header settings).
        variant: `"associations"` (send `messages`) or `"plain"` (send `plain_messages`).
        split: the split the rows come from (part of the header).
        client, on_record, seed, retry_command, retry_failed, overwrite: as :func:`run_requests`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    column = VARIANTS[variant]
    requests = [{"id": row["id"], "messages": row[column]} for row in rows]
    return run_requests(requests, output_file, config, {"variant": variant, "split": split}, retry_failed=retry_failed,
                        overwrite=overwrite, client=client, on_record=on_record, seed=seed,
                        retry_command=retry_command, changed="the instruction data changed")


def _to_send(requests: Sequence[Mapping[str, Any]], latest: Mapping[str, Mapping[str, Any]],
             retry_failed: bool) -> List[Mapping[str, Any]]:
    """The requests without a record in `latest` (and the failed ones with `retry_failed`)."""
    return [r for r in requests if r["id"] not in latest or (latest[r["id"]].get("status") == "failed" and retry_failed)]


def run_requests(
    requests: Sequence[Mapping[str, Any]],
    output_file: str,
    config: PromptingConfig,
    header_fields: Mapping[str, Any],
    parse: Callable[[str], Dict[str, Any]] = answer_fields,
    retry_failed: bool = False,
    overwrite: bool = False,
    client: Optional[openai.OpenAI] = None,
    on_record: Optional[Callable[[Dict[str, Any]], None]] = None,
    seed: int = 0,
    retry_command: Optional[str] = None,
    changed: str = "the requests changed",
    what: str = "prompting results",
) -> PromptingSummary:
    """Send every request (`{"id", "messages"}`) that has no record yet in `output_file` (and failed ones with
    `retry_failed`), appending results as they come: the runner behind :func:`run_prompting` and the A/B judge.

    Args:
        requests: `id` (unique) and `messages` (the chat messages to send) of each request.
        output_file: the results JSONL (continued if it exists with the same header settings).
        header_fields: what else the file's header records and must match on a re-run (with the model and the
            generation settings), e.g. `{"variant": ..., "split": ...}`.
        parse: the fields an answer's record adds to its raw text (default: the IAMM_large answer's emotion and
            response).
        client: an `openai.OpenAI` (default: `config.make_client()`); its own retries should be off.
        on_record: called in the calling thread after each record is written.
        retry_command: the command the summary names to send failed samples again.
        changed: what to say when a recorded request had other messages (why the prompts differ).

    On KeyboardInterrupt, nothing new is sent, the requests in flight are finished and recorded, the summary is
    written, and the KeyboardInterrupt is raised again.
    """
    client = client or config.make_client()  # (no API key: refused before the results file is created)
    header = {"format": RESULTS_FORMAT, "model": config.model, **header_fields, "generation": config.generation_kwargs()}
    compared = ("format", "model", *header_fields, "generation")
    records, writer = open_records(output_file, header, compared, overwrite, what=what)
    latest = {r["id"]: r for r in records}
    for request in requests:
        previous = latest.get(request["id"])
        if previous is not None and previous.get("prompt_sha") != prompt_sha(request["messages"]):
            writer.close()
            raise ValueError(f"{output_file}: the recorded request of {request['id']} had other messages ({changed}); "
                             "use another --output_file or pass --overwrite_output true")
    todo = _to_send(requests, latest, retry_failed)
    spent = sum(_record_tokens(r) for r in latest.values())
    logger.info("%s: %d of %d samples to send (%d tokens used so far)", output_file, len(todo), len(requests), spent)
    budget = Budget(config.max_requests, config.max_total_tokens, spent_tokens=spent)
    stop, rng_lock = threading.Event(), threading.Lock()
    rng = random.Random(seed)
    gate = RateLimitGate(config, random.Random(rng.random()))

    def task(request) -> Optional[Dict[str, Any]]:
        with rng_lock:
            own_rng = random.Random(rng.random())
        record = request_sample(client, request["id"], request["messages"], config, budget, stop, own_rng, gate,
                                parse)
        if record is not None:
            writer.write(record)
        return record

    n_finished = 0
    interrupted = False
    executor = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="prompt")
    try:
        futures = {executor.submit(task, request) for request in todo}
        while futures:
            finished, futures = wait(futures, return_when=FIRST_COMPLETED)
            for future in finished:
                record = future.result()
                if record is not None:
                    n_finished += 1
                    if on_record is not None:
                        on_record(record)
            if budget.stopped:
                stop.set()
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        logger.warning("interrupted: finishing the requests in flight, sending nothing new")
    finally:
        stop.set()  # (after an error too: nothing new is sent, retries waiting are dropped)
        executor.shutdown(wait=True, cancel_futures=True)
        writer.close()
    latest = latest_records(output_file)
    summary = summarize(output_file, [request["id"] for request in requests], config, latest)
    summary.finished_this_run = n_finished
    summary.requests_this_run = budget.requests
    summary.rate_limited_this_run = gate.responses
    if retry_command:
        summary.retry_command = retry_command
    summary.tokens_this_run = budget.prompt_tokens + budget.completion_tokens
    summary.stopped = budget.stopped or ("interrupted" if interrupted else None)
    if budget.token_budget_reached:  # the same budget would stop a re-run at once: say what it takes to continue
        in_file = summary.prompt_tokens + summary.completion_tokens  # requests in flight at the stop included
        left = _to_send(requests, latest, retry_failed)  # what a re-run would send
        largest = max((estimate_prompt_tokens(request["messages"]) + (config.max_tokens or 0) for request in left),
                      default=0)
        summary.stopped = (f"token budget of {config.max_total_tokens} reached ({in_file} tokens in the file; a "
                           f"request can take up to {largest} more)")
        summary.to_continue = (f"a re-run with this budget sends nothing: raise --max_total_tokens to at least "
                               f"{in_file + largest} to continue" if left else "nothing is left to send")
    with open(summary_path(output_file), "w") as f:
        json.dump({**asdict(summary), "model": config.model, **header_fields}, f, indent=2)
    if interrupted:
        raise KeyboardInterrupt
    return summary


def retry_command(script: str, argv: Sequence[str]) -> str:
    """The command line `python <script> <argv>` with `--retry_failed true` (what the summary prints to send the
    failed requests again)."""
    argv = list(argv)
    if "--retry_failed" in argv:
        i = argv.index("--retry_failed")
        del argv[i: i + 2]
    return shlex.join(["python", script, *argv, "--retry_failed", "true"])


def summary_path(output_file: str) -> str:
    """Where a run's summary (counts, tokens, cost) is written: beside the results, `<name>.summary.json`."""
    stem = output_file[: -len(".jsonl")] if output_file.endswith(".jsonl") else output_file
    return stem + ".summary.json"
