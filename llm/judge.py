"""An LLM judge for A/B studies (:mod:`modeling_iamm.ab_study`): more annotators, through any OpenAI-compatible chat
model.

Each pair of a study is sent twice, once in each display order (system A as "Response 1", then system B), with the
study's aspect definitions (the paper's, by default) in the prompt, in the manner of MT-Bench's pairwise judge. The
judge answers with a short explanation and, on its last line, a JSON object of verdicts (`"1"`, `"2"` or `"equal"`
per aspect). Per aspect, the two verdicts are read in system terms; when they disagree (the verdict changed with the
order), the pair counts as Equal for that aspect: MT-Bench's rule against position bias. A verdict that cannot be
read is recorded as unreadable (the pair then has no verdict of this judge on that aspect), never guessed.

The requests go through the package's prompting runner (:func:`iamm.llm.openai_prompting.run_requests`): bounded
concurrency, retries, the rate-limit pause, request and token budgets, and a resumable results file
(`<study>/judges/<annotator>.jsonl`, every answer appended as it arrives; a killed run loses nothing and a re-run
sends only what is missing). The raw answers and the combined verdicts then go into the study's store, under the
judge's annotator name (`judge:<model>`, or `judge:<model>:seed<k>` for one model sampled with several seeds): in
the report, judges are annotators like people, with their own Win / Lose and kappa.
"""

import json
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from modeling_iamm.ab_study import JUDGE_PREFIX, Aspect, Pair, Study, StudyError, check_annotator_name

from .openai_prompting import PromptingConfig, PromptingSummary, latest_records, run_requests

JUDGE_PROMPT_VERSION = 1
ORDERS = ("a", "b")
"""A request shows system A first (`"a"`) or system B first (`"b"`)."""

SYSTEM_PROMPT = """Please act as an impartial judge and compare two responses that a listener could give to the \
speaker of the dialogue below. The speaker tells the listener about something that happened to them; a good \
listener responds with empathy.

Judge each aspect on its own:
{aspects}

Avoid any position bias: the order in which the two responses are presented must not influence your decision. Do \
not let the length of the responses influence you. Be as objective as possible. First explain your comparison in a \
few sentences. Then, on the last line, give your verdicts as one JSON object with one key per aspect and the value \
"1" if Response 1 is better, "2" if Response 2 is better, or "equal" if neither is better, for example:
{example}"""

USER_PROMPT = """[Dialogue]
{dialogue}
[End of Dialogue]

[Response 1]
{first}
[End of Response 1]

[Response 2]
{second}
[End of Response 2]"""

VERDICT_WORDS = {"1": "1", "response 1": "1", "2": "2", "response 2": "2", "equal": "equal", "tie": "equal",
                 "neither": "equal", "same": "equal"}
"""Values read as a verdict (case-insensitive); anything else is unreadable."""


def request_id(pair_id: str, shown_first: str) -> str:
    """The id of one judge request: the pair and which system was shown first."""
    return f"{pair_id}|{shown_first}"


def split_request_id(rid: str) -> Tuple[str, str]:
    pair_id, _, shown_first = rid.rpartition("|")
    return pair_id, shown_first


def judge_messages(pair: Pair, aspects: Sequence[Aspect], shown_first: str) -> List[Dict[str, str]]:
    """The chat messages asking for a verdict on `pair`, with system `shown_first` ("a" or "b") as Response 1."""
    if shown_first not in ORDERS:
        raise ValueError(f"shown_first must be 'a' or 'b', got {shown_first!r}")
    lines = [f"Situation: {pair.dialogue.situation}"] if pair.dialogue.situation.strip() else []
    lines += [f"{role.capitalize()}: {turn}" for role, turn in zip(pair.dialogue.roles, pair.dialogue.turns)]
    first, second = ((pair.response_a, pair.response_b) if shown_first == "a" else (pair.response_b, pair.response_a))
    example = json.dumps({a.name: v for a, v in zip(aspects, ("1", "equal", "2", "1", "equal", "2"))})
    system = SYSTEM_PROMPT.format(aspects="\n".join(f"- {a.name}: {a.definition}" for a in aspects), example=example)
    user = USER_PROMPT.format(dialogue="\n".join(lines), first=first, second=second)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


_JSON_OBJECT = re.compile(r"\{[^{}]*\}")


def parse_verdicts(text: str, aspects: Sequence[str]) -> Dict[str, Optional[str]]:
    """The verdict per aspect ("1", "2", "equal") of a judge's answer, or None where it cannot be read.

    The verdicts are the last JSON object in the answer with at least one of the aspects as a key (keys and values
    case-insensitive; a value of :data:`VERDICT_WORDS`, or the numbers 1 and 2). No such object: every aspect is
    None. Nothing is guessed from the explanation."""
    wanted = {a.lower(): a for a in aspects}
    for candidate in reversed(_JSON_OBJECT.findall(text or "")):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if not isinstance(data, dict):
            continue
        found = {str(k).strip().lower(): v for k, v in data.items()}
        if not set(found) & set(wanted):
            continue
        verdicts: Dict[str, Optional[str]] = {}
        for key, aspect in wanted.items():
            value = found.get(key)
            verdicts[aspect] = VERDICT_WORDS.get(str(value).strip().lower()) if value is not None else None
        return verdicts
    return {a: None for a in aspects}


def combine(first_a: Mapping[str, Optional[str]], first_b: Mapping[str, Optional[str]],
            aspects: Sequence[str]) -> Dict[str, Optional[str]]:
    """Per aspect, the pair's verdict in system terms from the verdicts of the two orders (`first_a`: system A was
    Response 1; `first_b`: system B was): the common verdict when both orders agree, Equal when they disagree
    (position bias), None when either could not be read."""
    out: Dict[str, Optional[str]] = {}
    for aspect in aspects:
        x, y = first_a.get(aspect), first_b.get(aspect)
        if x is None or y is None:
            out[aspect] = None
            continue
        in_a = {"1": "a", "2": "b", "equal": "equal"}[x]
        in_b = {"1": "b", "2": "a", "equal": "equal"}[y]
        out[aspect] = in_a if in_a == in_b else "equal"
    return out


def default_annotator(config: PromptingConfig) -> str:
    """`judge:<model>`, with `:seed<k>` when a sampling seed is set."""
    name = f"{JUDGE_PREFIX}{config.model}"
    return name if config.seed is None else f"{name}:seed{config.seed}"


def results_path(study: Study, annotator: str) -> str:
    """Where a judge's raw answers are kept: `<study>/judges/<annotator, file-safe>.jsonl`."""
    safe = re.sub(r"[^A-Za-z0-9_.\-]+", "_", annotator[len(JUDGE_PREFIX):] if annotator.startswith(JUDGE_PREFIX)
                  else annotator).strip("._") or "judge"
    return os.path.join(study.folder, "judges", f"{safe}.jsonl")


@dataclass
class JudgeSummary:
    """What one judge run did: the prompting summary (requests, tokens, failures) and what went into the store."""

    annotator: str
    results_file: str
    prompting: PromptingSummary
    pairs: int = 0
    pairs_judged: int = 0  # both orders answered
    verdicts: int = 0  # pair x aspect verdicts stored
    unreadable: int = 0  # pair x aspect without a verdict: an answer could not be read
    order_flips: Dict[str, int] = field(default_factory=dict)  # per aspect: the verdict changed with the order

    def __str__(self) -> str:
        flips = ", ".join(f"{a} {n}" for a, n in self.order_flips.items())
        return "\n".join([
            f"{self.annotator}: {self.pairs_judged} of {self.pairs} pairs judged in both orders; {self.verdicts} "
            f"verdicts stored, {self.unreadable} unreadable (no verdict, recorded as such)",
            f"verdicts that changed with the order (counted as equal): {flips or 'none'}",
            f"raw answers: {self.results_file}",
            str(self.prompting)])


def record_results(study: Study, annotator: str, config: PromptingConfig, results_file: str) -> JudgeSummary:
    """Read a judge's results file and store its raw answers and combined verdicts in the study (replacing what
    this annotator had). Pairs with an order not yet answered get no verdict."""
    aspects = list(study.aspect_names)
    answered: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for rid, record in latest_records(results_file).items():
        if record.get("status") == "answered":
            answered[split_request_id(rid)] = record
    outputs, verdicts = [], {}
    summary = JudgeSummary(annotator, results_file, PromptingSummary(), pairs=len(study.asked_pairs()),
                           order_flips={a: 0 for a in aspects})
    for pair in study.asked_pairs():
        parsed = {}
        for order in ORDERS:
            record = answered.get((pair.pair_id, order))
            if record is not None:
                parsed[order] = parse_verdicts(record["output"], aspects)
                outputs.append((pair.pair_id, order, record["output"], parsed[order]))
        if len(parsed) < 2:
            continue
        summary.pairs_judged += 1
        combined = combine(parsed["a"], parsed["b"], aspects)
        for aspect in aspects:
            x, y = parsed["a"][aspect], parsed["b"][aspect]
            if x is not None and y is not None and combined[aspect] == "equal" and not x == y == "equal":
                summary.order_flips[aspect] += 1
        summary.unreadable += sum(v is None for v in combined.values())
        kept = {a: v for a, v in combined.items() if v is not None}
        if kept:
            verdicts[pair.pair_id] = kept
            summary.verdicts += len(kept)
    details = {"model": config.model, "generation": config.generation_kwargs(), "prompt_version": JUDGE_PROMPT_VERSION,
               "results_file": os.path.relpath(results_file, study.folder)}
    study.record_judge(annotator, details, outputs, verdicts, source=f"judge:{os.path.basename(results_file)}")
    return summary


def run_judge(study: Study, config: PromptingConfig, annotator: Optional[str] = None, retry_failed: bool = False,
              overwrite: bool = False, client=None, retry_command: Optional[str] = None) -> JudgeSummary:
    """Judge every asked pair of `study` in both orders with the chat model of `config`, then store the verdicts.

    Re-running continues the same results file (only requests without an answer are sent; failed ones again with
    `retry_failed`); answers recorded with other prompts (other aspects or pairs) are refused. On
    KeyboardInterrupt, what was answered is stored first, then the KeyboardInterrupt is raised again.
    """
    annotator = check_annotator_name(annotator or default_annotator(config), kind="judge")
    if not annotator.startswith(JUDGE_PREFIX):
        raise StudyError(f"judge names start with {JUDGE_PREFIX!r} (got {annotator!r})")
    requests = [{"id": request_id(pair.pair_id, order), "messages": judge_messages(pair, study.aspects, order)}
                for pair in study.asked_pairs() for order in ORDERS]
    path = results_path(study, annotator)
    header = {"task": "ab-judge", "annotator": annotator, "study": study.meta["created"],
              "prompt_version": JUDGE_PROMPT_VERSION}
    try:
        prompting = run_requests(requests, path, config, header, parse=lambda text: {}, retry_failed=retry_failed,
                                 overwrite=overwrite, client=client, retry_command=retry_command,
                                 changed="the study's pairs or aspects are not those the answers were given for",
                                 what="A/B judge answers")
    except KeyboardInterrupt:
        record_results(study, annotator, config, path)
        raise
    summary = record_results(study, annotator, config, path)
    summary.prompting = prompting
    return summary


def judges_for_seeds(config: PromptingConfig, seeds: Optional[Sequence[int]]) -> List[PromptingConfig]:
    """One configuration per sampling seed (several annotators from one model), or the configuration itself."""
    if not seeds:
        return [config]
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"--seeds: {sorted(s for s in seeds if list(seeds).count(s) > 1)[0]} given twice")
    return [replace(config, seed=seed) for seed in seeds]
