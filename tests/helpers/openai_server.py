"""An OpenAI-compatible chat server on 127.0.0.1 for offline tests, with scripted faults.

`POST /v1/chat/completions` answers `Emotion: <label>\\nResponse: <text>` for the sample named in the `X-Sample-Id`
header (or a fixed answer, or what `respond(sample_id, body)` writes after reading the request: see
:func:`heuristic_judge`, a stand-in A/B judge). For each sample, `faults[sample_id]` lists what the server does on its 1st, 2nd, ...
request; once the list is used up, it answers normally ("ok"). Faults:

* `"429"` / `"429-date"`: rate limited, with `retry-after` in seconds / as an HTTP date;
* `"429-ms"`: rate limited with `retry-after-ms` (milliseconds) and a longer `retry-after` (clients that read
  `retry-after-ms` first, as OpenAI's own client does, wait the shorter time);
* `"429-quota"`: OpenAI's answer when the account's quota is used up (429, code `insufficient_quota`, no
  retry-after: waiting does not help);
* `"500"`, `"503"`, `"400"`: that status with an OpenAI-style error body;
* `"slow"`: waits `slow_seconds` (longer than the client's timeout), then tries to answer;
* `"drop"`: closes the connection without a reply;
* `"malformed"`: status 200 with a body that is not JSON; `"no-choices"`: valid JSON without `choices`.

A rate-limit storm (`storm_seconds`): from the first request on, for that long, EVERY request is answered 429
(rate_limit_exceeded) with `retry-after-ms` = `storm_retry_after_ms` and `retry-after` in whole seconds (rounded
up), as OpenAI documents its rate-limit responses, plus its `x-ratelimit-*-requests` headers; logged as
`"429-storm"`. Scripted faults apply after the storm.

`server.log` keeps `(sample_id, action)` for every request in arrival order; :meth:`OpenAIServer.successes` counts
the delivered good answers per sample (`"ok"` requests only: a slow reply arrives after the client gave up).
"""

import email.utils
import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional

SAMPLE_ID_HEADER = "X-Sample-Id"


class OpenAIServer:
    def __init__(self, faults: Optional[Dict[str, List[str]]] = None, answer: Optional[Callable[[str], str]] = None,
                 retry_after: float = 0.05, slow_seconds: float = 1.5, delay: float = 0.0,
                 storm_seconds: float = 0.0, storm_retry_after_ms: int = 300,
                 respond: Optional[Callable[[str, dict], str]] = None, port: int = 0):
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.answer = answer or (lambda sample_id: f"Emotion: sad\nResponse: I am sorry to hear that ({sample_id}).")
        self.respond = respond  # (sample id, request body) -> answer text: a "model" that reads the prompt
        self.retry_after, self.slow_seconds, self.delay = retry_after, slow_seconds, delay
        self.storm_seconds, self.storm_retry_after_ms = storm_seconds, storm_retry_after_ms
        self.storm_started: Optional[float] = None
        self.times: List[float] = []  # monotonic arrival time of each request, as in `log`
        self.log: List[tuple] = []
        self._lock = threading.Lock()
        self._seen: Counter = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                sample_id = self.headers.get(SAMPLE_ID_HEADER, "?")
                with server._lock:
                    now = time.monotonic()
                    if server.storm_started is None:
                        server.storm_started = now
                    if now - server.storm_started < server.storm_seconds:
                        action = "429-storm"
                    else:
                        n = server._seen[sample_id]
                        server._seen[sample_id] += 1
                        script = server.faults.get(sample_id, [])
                        action = script[n] if n < len(script) else "ok"
                    server.log.append((sample_id, action))
                    server.times.append(now)
                if server.delay:
                    time.sleep(server.delay)
                if action == "ok":
                    return self._send(200, server.completion(sample_id, body))
                if action == "429":
                    return self._send(429, _error("rate limited", "rate_limit_exceeded"),
                                      {"retry-after": str(server.retry_after)})
                if action == "429-storm":
                    wait_ms = server.storm_retry_after_ms
                    return self._send(429, _error("Rate limit reached for requests", "rate_limit_exceeded"), {
                        "retry-after-ms": str(wait_ms), "retry-after": str(-(-wait_ms // 1000)),
                        "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
                        "x-ratelimit-reset-requests": f"{wait_ms}ms"})
                if action == "429-ms":
                    return self._send(429, _error("rate limited", "rate_limit_exceeded"),
                                      {"retry-after-ms": str(int(server.retry_after * 1000)), "retry-after": "30"})
                if action == "429-quota":
                    return self._send(429, _error("You exceeded your current quota, please check your plan and "
                                                  "billing details.", "insufficient_quota"))
                if action == "429-date":
                    date = email.utils.formatdate(time.time() + 1, usegmt=True)  # whole seconds: waits 0..1 s
                    return self._send(429, _error("rate limited", "rate_limit_exceeded"), {"retry-after": date})
                if action in ("500", "503", "400"):
                    return self._send(int(action), _error(f"injected {action}", "server_error"))
                if action == "slow":
                    time.sleep(server.slow_seconds)
                    try:
                        return self._send(200, server.completion(sample_id, body))
                    except OSError:  # the client has gone
                        return None
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                if action == "malformed":
                    return self._send_raw(200, b'{"id": "chatcmpl-x", "choices": [{"message": ', "application/json")
                if action == "no-choices":
                    return self._send(200, {"id": "chatcmpl-x", "object": "chat.completion", "model": body.get("model")})
                raise ValueError(f"unknown action {action!r}")

            def _send(self, status, payload, headers=None):
                self._send_raw(status, json.dumps(payload).encode(), "application/json", headers)

            def _send_raw(self, status, data, content_type, headers=None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def completion(self, sample_id: str, body: dict) -> dict:
        text = self.respond(sample_id, body) if self.respond is not None else self.answer(sample_id)
        prompt_tokens = sum(len(m.get("content", "").split()) for m in body.get("messages", []))
        completion_tokens = len(text.split())
        return {
            "id": f"chatcmpl-{sample_id}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "test"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def requests_of(self, sample_id: str) -> List[str]:
        with self._lock:
            return [action for sid, action in self.log if sid == sample_id]

    def successes(self) -> Counter:
        with self._lock:
            return Counter(sid for sid, action in self.log if action == "ok")

    def __enter__(self) -> "OpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _error(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": code, "code": code, "param": None}}


# ---- a stand-in A/B judge ---------------------------------------------------------------------------------------
EMPATHY_WORDS = frozenset("sorry glad happy hope great wonderful awful terrible sad understand feel feeling proud "
                          "congratulations congrats love wow oh no sounds must".split())


def _block(text: str, name: str) -> str:
    start, end = f"[{name}]\n", f"\n[End of {name}]"
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    return text[i + len(start): j] if i >= 0 and j >= 0 else ""


def _words(text: str) -> List[str]:
    return [w for w in "".join(c.lower() if c.isalnum() else " " for c in text).split()]


def heuristic_score(aspect: str, response: str, dialogue: str) -> float:
    """A stand-in's score of a response on an aspect: empathy, words of a small empathy lexicon; relevance, distinct
    words shared with the dialogue; fluency (and any other aspect), distinct words over words (repetition lowers
    it), 0 for an empty response."""
    words = _words(response)
    if aspect == "empathy":
        return sum(w in EMPATHY_WORDS for w in words)
    if aspect == "relevance":
        return len(set(words) & set(_words(dialogue)))
    return len(set(words)) / len(words) if words else 0.0


def heuristic_verdict(aspect: str, first: str, second: str, dialogue: str) -> str:
    """"1", "2" or "equal": the response with the higher :func:`heuristic_score`."""
    x, y = heuristic_score(aspect, first, dialogue), heuristic_score(aspect, second, dialogue)
    return "1" if x > y else "2" if y > x else "equal"


def heuristic_judge(position_bias: float = 0.0, unreadable: float = 0.0, seed: int = 0) -> Callable[[str, dict], str]:
    """A stand-in for an LLM judge of `iamm.llm.judge` prompts: reads the dialogue and the two responses from the
    request's last message and gives, per aspect, :func:`heuristic_verdict`. With probability `position_bias` (drawn
    per request from its sample id and `seed`) it answers "1" for every aspect without reading, and with probability
    `unreadable` it gives no verdict line. Its verdicts show that the tool works, not which system is better."""
    import hashlib
    import random

    def respond(sample_id: str, body: dict) -> str:
        messages = body.get("messages", [])
        system, user = messages[0].get("content", ""), messages[-1].get("content", "")
        aspects = [line[2:].split(":")[0] for line in system.splitlines() if line.startswith("- ")]
        draw = random.Random(int(hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest(), 16))
        if draw.random() < unreadable:
            return "Both responses have their merits; I cannot decide."
        if draw.random() < position_bias:
            return "Response 1 reads better.\n" + json.dumps({a: "1" for a in aspects})
        dialogue, first, second = (_block(user, n) for n in ("Dialogue", "Response 1", "Response 2"))
        verdicts = {aspect: heuristic_verdict(aspect, first, second, dialogue) for aspect in aspects}
        return "Compared by simple text features.\n" + json.dumps(verdicts)

    return respond


def main() -> None:
    """Serve the stand-in judge until interrupted: `python -m tests.helpers.openai_server --port 8765 --judge`."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--judge", action="store_true", help="answer A/B judge prompts (heuristic_judge)")
    parser.add_argument("--position_bias", type=float, default=0.0)
    parser.add_argument("--unreadable", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0, help="draws position bias and unreadable answers (a request's "
                        "own seed, when it sends one, instead)")
    args = parser.parse_args()

    def respond(sample_id: str, body: dict) -> str:  # a request's sampling seed, when it has one: one judge per seed
        return heuristic_judge(args.position_bias, args.unreadable, body.get("seed", args.seed))(sample_id, body)

    with OpenAIServer(respond=respond if args.judge else None, port=args.port) as server:
        print(f"serving {server.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
