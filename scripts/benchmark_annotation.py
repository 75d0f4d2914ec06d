#!/usr/bin/env python
"""Load on the A/B annotation page: many annotators submitting at once through the page's API, then a check that
every answer is in the store exactly once.

    python scripts/benchmark_annotation.py --study studies/iamm-vs-woia --annotators 20 --seconds 60 [--json true]

The study's store is copied to a temporary folder first (the benchmark's answers never reach the real study, unless
`--in_place true`), and the page is served from it by `scripts/ab_test.py annotate` in a process of its own. Each
annotator is a thread that calls the page's API over Gradio's HTTP interface (`POST /gradio_api/call/<endpoint>`,
then the event's stream, as `curl` users do; `gradio_client` costs its caller about 0.1 s of CPU per call, which
would measure the clients): `/start`, then `/save` with random answers on the pair the page returns, as fast as the
page answers, for `--seconds`; once it has answered every pair it answers
them again (a replacement, which must not add rows). Meanwhile a probe loads the page (GET /) and calls `/start`
for an annotator of its own twice a second: the response time a person opening the page would see. Before the load
the same probe runs alone, for comparison.

Printed: saves and answers per second, `/save` latency percentiles, the probe's latencies idle and under load, and
the store check: the rows in the store against the answers the page confirmed (each key once, with the choice last
confirmed), and the CPU time the server and the clients spent per save. Clients and server share this machine's
cores, so the latencies include the clients' load; the server's CPU time per save is what a save costs the page.
"""

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from modeling_iamm.ab_study import Study, copy_store
from modeling_iamm.cli import parse_args, script_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class BenchmarkArguments:
    study: str = field(metadata={"help": "A study folder (scripts/ab_test.py prepare)."})
    annotators: int = field(default=20, metadata={"help": "Annotators submitting at once."})
    seconds: float = field(default=60.0, metadata={"help": "How long they submit."})
    idle_seconds: float = field(default=10.0, metadata={"help": "How long the probe runs alone first."})
    port: int = field(default=7931, metadata={"help": "Port of the page."})
    in_place: bool = field(default=False, metadata={"help": "Use the study itself, not a copy (adds answers)."})
    seed: int = field(default=0, metadata={"help": "Seed of the random answers."})
    json: bool = field(default=False, metadata={"help": "Print JSON only."})

    def __post_init__(self):
        if self.annotators < 1 or self.seconds <= 0:
            raise ValueError("--annotators must be >= 1 and --seconds > 0")


def percentiles(values: List[float]) -> Dict[str, Optional[float]]:
    """Milliseconds: p50, p95, p99, max and the count."""
    if not values:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"n": len(values), "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99),
            "max_ms": round(1000 * ordered[-1], 1), "mean_ms": round(1000 * statistics.fmean(values), 1)}


def serve(study_folder: str, port: int) -> subprocess.Popen:
    """`scripts/ab_test.py annotate` on `port`, in a process of its own; returns once the page answers."""
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "ab_test.py"), "annotate", "--study",
                                study_folder, "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return process
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"the page did not start (exit {process.returncode})")
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the page did not answer within 120 s")


def cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU seconds of a process so far (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def call(url: str, endpoint: str, data: list) -> list:
    """One call of the page's API over Gradio's HTTP interface (`POST /gradio_api/call/<endpoint>`, then the event's
    stream, as `curl` users call it): the outputs, or a `RuntimeError` with the server's error."""
    request = urllib.request.Request(f"{url}gradio_api/call/{endpoint}", data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        event_id = json.load(response)["event_id"]
    event = None
    with urllib.request.urlopen(f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=120) as stream:
        for raw in stream:
            line = raw.decode("utf-8").rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: ") and event in ("complete", "error"):
                if event == "error":
                    raise RuntimeError(f"/{endpoint}: {line[len('data: '):]}")
                return json.loads(line[len("data: "):])
    raise RuntimeError(f"/{endpoint}: the stream ended without a result")


def probe(url: str, stop: threading.Event, page_times: List[float], start_times: List[float]) -> None:
    """Load the page and call /start for the probe's own annotator, twice a second, until `stop`."""
    while not stop.is_set():
        began = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()
        page_times.append(time.perf_counter() - began)
        began = time.perf_counter()
        call(url, "start", ["probe"])
        start_times.append(time.perf_counter() - began)
        stop.wait(0.5)


def annotator(url: str, name: str, aspects: Tuple[str, ...], deadline: float, seed: int,
              confirmed: Dict[Tuple[str, str, str], str], latencies: List[float], errors: List[str],
              lock: threading.Lock) -> None:
    """Answer pairs through /save until `deadline`; record every answer the page confirmed."""
    rng = random.Random(f"{seed}:{name}")
    view = call(url, "start", [name])
    seen: List[str] = []
    while time.monotonic() < deadline:
        pair_id = view[1] or (rng.choice(seen) if seen else "")
        if not pair_id:
            break
        answers = [rng.choice(["1", "2", "equal"]) for _ in aspects]
        began = time.perf_counter()
        try:
            view = call(url, "save", [name, pair_id, *answers])
        except Exception as error:  # noqa: BLE001 - counted, and the run goes on
            with lock:
                errors.append(f"{type(error).__name__}: {error}")
            continue
        elapsed = time.perf_counter() - began
        if not str(view[-1]).startswith("Saved"):
            with lock:
                errors.append(str(view[-1]))
            continue
        with lock:
            latencies.append(elapsed)
            for aspect, answer in zip(aspects, answers):
                confirmed[(name, pair_id, aspect)] = answer
        if pair_id not in seen:
            seen.append(pair_id)


def check_store(study: Study, confirmed: Dict[Tuple[str, str, str], str]) -> Dict[str, int]:
    """Rows of the benchmark's annotators against the answers the page confirmed (screen terms)."""
    names = {name for name, _, _ in confirmed}
    with study.connect() as conn:
        rows = conn.execute("SELECT annotator, pair_id, aspect, choice FROM judgements").fetchall()
    stored = [r for r in rows if r[0] in names]
    keys = [(a, p, x) for a, p, x, _ in stored]
    wrong = sum(confirmed.get((a, p, x)) != study.pair(p).to_screen(c) for a, p, x, c in stored)
    return {"confirmed_keys": len(confirmed), "rows": len(stored), "duplicate_keys": len(keys) - len(set(keys)),
            "missing": len(set(confirmed) - set(keys)), "unconfirmed_rows": len(set(keys) - set(confirmed)),
            "choice_differs": wrong}


@script_main("benchmark_annotation")
def main(argv=None) -> None:
    (args,) = parse_args((BenchmarkArguments,), argv)
    source = Study.open(args.study)
    workdir = None
    folder = source.folder
    if not args.in_place:
        workdir = tempfile.mkdtemp(prefix="ab-benchmark-")
        folder = os.path.join(workdir, "study")
        copy_store(source, folder)
    study = Study.open(folder)
    url = f"http://127.0.0.1:{args.port}/"
    server = serve(folder, args.port)
    try:
        idle_page, idle_start = [], []
        stop = threading.Event()
        thread = threading.Thread(target=probe, args=(url, stop, idle_page, idle_start), daemon=True)
        thread.start()
        time.sleep(args.idle_seconds)
        stop.set()
        thread.join()

        load_page, load_start, latencies, errors = [], [], [], []
        confirmed: Dict[Tuple[str, str, str], str] = {}
        lock = threading.Lock()
        stop = threading.Event()
        prober = threading.Thread(target=probe, args=(url, stop, load_page, load_start), daemon=True)
        deadline = time.monotonic() + args.seconds
        workers = [threading.Thread(target=annotator, args=(url, f"bench{i:02d}", study.aspect_names, deadline,
                                                            args.seed, confirmed, latencies, errors, lock))
                   for i in range(args.annotators)]
        began, server_cpu, client_cpu = time.monotonic(), cpu_seconds(server.pid), time.process_time()
        prober.start()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.monotonic() - began
        server_cpu = None if server_cpu is None else cpu_seconds(server.pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
        stop.set()
        prober.join()
    finally:
        server.kill()
        server.wait()
    result = {
        "annotators": args.annotators, "seconds": round(elapsed, 1), "pairs": len(study.asked_pairs()),
        "aspects": len(study.aspect_names), "saves": len(latencies),
        "saves_per_second": round(len(latencies) / elapsed, 1),
        "answers_per_second": round(len(latencies) * len(study.aspect_names) / elapsed, 1),
        "save_latency": percentiles(latencies), "errors": len(errors), "first_errors": errors[:3],
        "server_cpu_ms_per_save": None if server_cpu is None else round(1000 * server_cpu / max(len(latencies), 1), 1),
        "client_cpu_ms_per_save": round(1000 * client_cpu / max(len(latencies), 1), 1),
        "probe_idle": {"page": percentiles(idle_page), "start": percentiles(idle_start)},
        "probe_under_load": {"page": percentiles(load_page), "start": percentiles(load_start)},
        "store": check_store(study, confirmed), "cpus": os.cpu_count(),
    }
    result["store_ok"] = (result["store"]["rows"] == result["store"]["confirmed_keys"]
                          and not any(result["store"][k] for k in ("duplicate_keys", "missing", "unconfirmed_rows",
                                                                   "choice_differs")))
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(json.dumps(result, indent=2))
    print(f"{args.annotators} annotators, {result['seconds']} s: {result['saves']} saves "
          f"({result['saves_per_second']}/s), /save p50 {result['save_latency']['p50_ms']} ms, p95 "
          f"{result['save_latency']['p95_ms']} ms; page load p95 idle {result['probe_idle']['page']['p95_ms']} ms, "
          f"under load {result['probe_under_load']['page']['p95_ms']} ms; store "
          f"{'OK' if result['store_ok'] else 'MISMATCH'} ({result['store']['rows']} rows for "
          f"{result['store']['confirmed_keys']} confirmed answers)")


if __name__ == "__main__":
    main()
