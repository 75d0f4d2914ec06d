"""Prompt an OpenAI-compatible chat model with IAMM_large instructions: bounded concurrency, our own retries,
request and token budgets, and a resumable JSONL of results.

Every row's `messages` (or `plain_messages`, the baseline without associated words) goes to
`{base_url}/chat/completions` through the `openai` client, created with `max_retries=0` so that the retries are
ours (:func:`retry_delay`):

* retried: HTTP 408, 409, 429 and 5xx, timeouts, connection errors (a dropped connection) and unreadable replies
  (malformed JSON, a reply without `choices`), up to `max_attempts` sends per sample;
* the wait is the server's `retry-after-ms` / `retry-after` header (seconds or an HTTP date), capped at
  `retry_after_max`, or else exponential back-off `min(backoff_max, backoff_initial * 2**(attempt-1))` with
  "equal jitter" (half of it fixed, half uniformly random);
* not retried: other 4xx (bad request, authentication, unknown model, ...): the sample is recorded as failed.

Results are appended to a JSONL file as they arrive, one line per finished sample (written and fsynced at once):

    {"id": ..., "status": "answered", "output": <raw answer>, "emotion": <label or null>, "response": ...,
     "valid_label": ..., "finish_reason": ..., "usage": {"prompt_tokens", "completion_tokens", "total_tokens"},
     "attempts": n, "prompt_sha": ...}
    {"id": ..., "status": "failed", "error": "<type>: <message of the last error>", "attempts": n, ...}

so Ctrl-C or a crash loses nothing that was answered, and a re-run sends only the samples without a record (and the
failed ones again with `retry_failed=True`; the newest record of an id is the one that counts). The file's header
holds the model, variant, split and generation settings; a file written with others is refused.

Budgets: `max_requests` counts every HTTP request sent (retries included); `max_total_tokens` counts the tokens
the server reported (prompt + completion) in this run. When one is reached, no new request is sent, requests in
flight are completed and recorded, samples still waiting are left for a later run, and the summary says why it
stopped. A token budget can be overshot by the requests in flight when it is reached (at most `concurrency`).

The sample id travels in the `X-Sample-Id` request header (servers ignore unknown headers), which lets a proxy or
a test server see which sample a request is for.
"""

import email.utils
import hashlib
import json
import logging
import os
import random
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
COMPARED_HEADER_KEYS = ("format", "model", "variant", "split", "generation")
VARIANTS = {"associations": "messages", "plain": "plain_messages"}
RETRYABLE_STATUS = {408, 409, 429}


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
        max_requests / max_total_tokens: budgets for this run (None: unlimited).
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
    max_requests: Optional[int] = field(default=None, metadata={"help": "Stop after sending this many requests (retries count)."})
    max_total_tokens: Optional[int] = field(default=None, metadata={"help": "Stop once this run used this many tokens."})
    input_price_per_1m: float = field(default=0.50, metadata={"help": "USD per 1M prompt tokens (default: gpt-3.5-turbo-0125, an assumption)."})
    output_price_per_1m: float = field(default=1.50, metadata={"help": "USD per 1M completion tokens (default: gpt-3.5-turbo-0125, an assumption)."})

    def __post_init__(self):
        for name in ("concurrency", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("request_timeout", "backoff_initial", "backoff_max", "retry_after_max", "input_price_per_1m",
                     "output_price_per_1m"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_requests", "max_total_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {getattr(self, name)}")

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
class Budget:
    """Thread-safe request and token counters with optional limits; `stopped` names the limit that was reached."""

    def __init__(self, max_requests: Optional[int] = None, max_total_tokens: Optional[int] = None):
        self.max_requests, self.max_total_tokens = max_requests, max_total_tokens
        self.requests = self.prompt_tokens = self.completion_tokens = 0
        self.stopped: Optional[str] = None
        self._lock = threading.Lock()

    def acquire_request(self) -> bool:
        """Count one request about to be sent; False (and nothing counted) once a budget is used up."""
        with self._lock:
            if self.max_total_tokens is not None and self.prompt_tokens + self.completion_tokens >= self.max_total_tokens:
                self.stopped = self.stopped or f"token budget of {self.max_total_tokens} reached"
            if self.max_requests is not None and self.requests >= self.max_requests:
                self.stopped = self.stopped or f"request budget of {self.max_requests} reached"
            if self.stopped:
                return False
            self.requests += 1
            return True

    def add_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens


# ---- one sample -------------------------------------------------------------------------------------------------
def prompt_sha(messages: Sequence[Mapping[str, str]]) -> str:
    """A hash of the messages of a request (a recorded answer must belong to the same prompt)."""
    return hashlib.sha1(json.dumps(list(map(dict, messages)), ensure_ascii=False).encode("utf-8")).hexdigest()


def _usage(completion) -> Dict[str, int]:
    usage = getattr(completion, "usage", None)
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    output = int(getattr(usage, "completion_tokens", 0) or 0)
    return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}


def request_sample(client: openai.OpenAI, sample_id: str, messages: Sequence[Mapping[str, str]],
                   config: PromptingConfig, budget: Budget, stop: threading.Event, rng: random.Random
                   ) -> Optional[Dict[str, Any]]:
    """Send one sample until it is answered, fails for good, or the run stops; its record, or None if it was left
    for a later run (a budget was reached or the run was interrupted before it finished)."""
    attempts, started = 0, time.monotonic()
    base = {"id": sample_id, "prompt_sha": prompt_sha(messages)}
    while True:
        if stop.is_set() or not budget.acquire_request():
            return None
        attempts += 1
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
            if isinstance(error, ValueError) and not isinstance(error, MalformedReply):
                error = MalformedReply(f"unreadable reply ({_describe(error)})")  # e.g. a JSON decode error
            if not is_retryable(error) or attempts >= config.max_attempts:
                return {**base, "status": "failed", "error": _describe(error), "attempts": attempts,
                        "retryable": is_retryable(error)}
            delay = retry_delay(error, attempts, config, rng)
            logger.info("%s: attempt %d failed (%s); retrying in %.2fs", sample_id, attempts, _describe(error), delay)
            if stop.wait(delay):
                return None
            continue
        usage = _usage(completion)
        budget.add_usage(usage["prompt_tokens"], usage["completion_tokens"])
        parsed = parse_answer(text)
        return {**base, "status": "answered", "output": text, "emotion": parsed.emotion, "response": parsed.response,
                "valid_label": parsed.valid_label, "finish_reason": getattr(choice, "finish_reason", None),
                "usage": usage, "attempts": attempts, "elapsed_s": round(time.monotonic() - started, 3)}


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
    tokens_this_run: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    price_per_1m: Dict[str, float] = field(default_factory=dict)
    stopped: Optional[str] = None

    def __str__(self) -> str:
        lines = [f"{self.answered}/{self.samples} answered, {self.failed} failed, {self.pending} not sent yet",
                 f"this run: {self.requests_this_run} requests, {self.finished_this_run} samples finished, "
                 f"{self.tokens_this_run} tokens",
                 f"tokens in the file: {self.prompt_tokens} prompt + {self.completion_tokens} completion; "
                 f"estimated cost ${self.cost_usd:.4f} at ${self.price_per_1m.get('input', 0):.2f}/"
                 f"${self.price_per_1m.get('output', 0):.2f} per 1M tokens"]
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}; re-run the same command to continue")
        return "\n".join(lines)


def latest_records(path: str) -> Dict[str, Dict[str, Any]]:
    """The newest record of each sample id in a results file (an answer is never followed by another record)."""
    _, records = read_jsonl(path)
    latest: Dict[str, Dict[str, Any]] = {}
    for record in records:
        latest[record["id"]] = record
    return latest


def summarize(path: str, ids: Sequence[str], config: PromptingConfig) -> PromptingSummary:
    """Counts, token totals and the cost estimate of a results file, for the samples `ids`."""
    latest = latest_records(path)
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
) -> PromptingSummary:
    """Send every row that has no record yet (and failed ones with `retry_failed`), appending results as they come.

    Args:
        rows: instruction rows (:data:`iamm.llm.instructions.INSTRUCTION_FEATURES`; `id` and `messages` or
            `plain_messages` are used).
        output_file: the results JSONL (continued if it exists with the same header settings).
        variant: `"associations"` (send `messages`) or `"plain"` (send `plain_messages`).
        split: the split the rows come from (part of the header).
        client: an `openai.OpenAI` (default: `config.make_client()`); its own retries should be off.
        on_record: called in the calling thread after each record is written.

    On KeyboardInterrupt, nothing new is sent, the requests in flight are finished and recorded, the summary is
    written, and the KeyboardInterrupt is raised again.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    column = VARIANTS[variant]
    header = {"format": RESULTS_FORMAT, "model": config.model, "variant": variant, "split": split,
              "generation": config.generation_kwargs()}
    records, writer = open_records(output_file, header, COMPARED_HEADER_KEYS, overwrite, what="prompting results")
    latest = {r["id"]: r for r in records}
    todo = []
    for row in rows:
        previous = latest.get(row["id"])
        if previous is not None and previous.get("prompt_sha") != prompt_sha(row[column]):
            writer.close()
            raise ValueError(f"{output_file}: the recorded request of {row['id']} had other messages (the instruction "
                             "data changed); use another --output_file or pass --overwrite_output true")
        if previous is None or (previous["status"] == "failed" and retry_failed):
            todo.append(row)
    logger.info("%s: %d of %d samples to send", output_file, len(todo), len(rows))
    client = client or config.make_client()
    budget, stop, rng_lock = Budget(config.max_requests, config.max_total_tokens), threading.Event(), threading.Lock()
    rng = random.Random(seed)

    def task(row) -> Optional[Dict[str, Any]]:
        with rng_lock:
            own_rng = random.Random(rng.random())
        record = request_sample(client, row["id"], row[column], config, budget, stop, own_rng)
        if record is not None:
            writer.write(record)
        return record

    n_finished = 0
    interrupted = False
    executor = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="prompt")
    try:
        futures = {executor.submit(task, row) for row in todo}
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
    summary = summarize(output_file, [row["id"] for row in rows], config)
    summary.finished_this_run = n_finished
    summary.requests_this_run = budget.requests
    summary.tokens_this_run = budget.prompt_tokens + budget.completion_tokens
    summary.stopped = budget.stopped or ("interrupted" if interrupted else None)
    with open(summary_path(output_file), "w") as f:
        json.dump({**asdict(summary), "model": config.model, "variant": variant, "split": split}, f, indent=2)
    if interrupted:
        raise KeyboardInterrupt
    return summary


def summary_path(output_file: str) -> str:
    """Where a run's summary (counts, tokens, cost) is written: beside the results, `<name>.summary.json`."""
    stem = output_file[: -len(".jsonl")] if output_file.endswith(".jsonl") else output_file
    return stem + ".summary.json"
