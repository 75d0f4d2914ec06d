"""A/B studies of two systems' responses: the paper's human evaluation (Table 2) as a tool.

The paper compares IAMM with a baseline response by response: for each aspect (empathy, relevance, fluency) an
annotator says which response is better, or neither; "Win" is the share of answers preferring IAMM, "Lose" the share
preferring the baseline, and Fleiss' kappa measures how much the annotators agree. This module holds such a study:

* **pairs** (:func:`prepare_study`): two systems' outputs joined by sample id to their dialogue, a random subset of
  `num_samples` of them, each with a display order drawn from the seed (which system is "Response 1"), so that
  annotators never see which system wrote which. Two identical responses are recorded as a tie, and nobody is asked;
* **the store** (:class:`Study`): one SQLite file in the study folder (`study.sqlite`, WAL journal): the study's
  settings, its pairs, and every answer under a unique key annotator x pair x aspect (answering again replaces,
  never duplicates). Every answer is committed before the call that writes it returns, so a killed server loses no
  answer it reported as saved;
* **statistics** (:func:`fleiss_kappa`, :func:`cohen_kappa`, :func:`sign_test`) and **the report**
  (:func:`build_report`, :func:`report_markdown`): Win / Lose / Equal per aspect from system A's side, Fleiss'
  kappa across annotators, a sign test of Win against Lose over the pairs' majority verdicts, and, where people and
  an LLM judge answered the same pairs, the judge's agreement with the people (Cohen's kappa).

The faces over it: `scripts/ab_test.py` (prepare, annotate, judge, import, status, report, push), the annotation
page `iamm.hub.annotation`, the LLM judge `iamm.llm.judge`.

Counting, as the paper does: every annotator's answer on a pair is one point. A pair with identical responses counts
as Equal for every annotator of a group (each would have answered so); it is left out of kappa and of the sign test,
where nobody was asked. A pair's verdict (for the sign test and Cohen's kappa) is the answer most of its annotators
gave; when two answers share the top count, it is Equal.
"""

import csv
import datetime
import hashlib
import json
import math
import os
import random
import re
import sqlite3
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

STUDY_FORMAT = 1
STORE_NAME = "study.sqlite"
CHOICES = ("a", "b", "equal")
"""What an answer records: system A is better, system B is better, or neither (always in system terms)."""

SCREEN_CHOICES = ("1", "2", "equal")
"""What an annotator sees and picks: "Response 1", "Response 2" or "Equal" (mapped to :data:`CHOICES` by the pair's
display order)."""

PERSON, JUDGE = "person", "judge"
ANNOTATOR_KINDS = (PERSON, JUDGE)
JUDGE_PREFIX = "judge:"
"""Names of LLM-judge annotators start with this; people's names may not."""


@dataclass(frozen=True)
class Aspect:
    """One question asked of every pair: `name` in files and commands, `label` on the page, and the definition the
    annotators (and the judge's prompt) read."""

    name: str
    label: str
    definition: str


PAPER_ASPECTS: Tuple[Aspect, ...] = (
    Aspect("empathy", "Empathy", "Whether the emotion in the response is appropriate."),
    Aspect("relevance", "Relevance", "Whether the response is relevant to the dialogue topic and content."),
    Aspect("fluency", "Fluency", "Whether the language of the response is natural and fluent."),
)
"""The paper's three aspects (Section 4.4), with its definitions: the default of every study."""

PAPER_SHORT_NAMES = {"empathy": "Emp.", "relevance": "Rel.", "fluency": "Flu."}

_WRITE_LOCKS: Dict[str, threading.Lock] = {}  # one per store file: this process's writers take turns

_ASPECT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class StudyError(ValueError):
    """A mistake in a study's input (files, names, answers), worded as one line that says where and what to do."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def check_annotator_name(name: str, kind: str = PERSON) -> str:
    """An annotator's name, stripped; :class:`StudyError` unless it is 1-100 printable characters (people's names may
    not start with `judge:`, which marks an LLM judge)."""
    name = (name or "").strip()
    if not name:
        raise StudyError("an annotator needs a name")
    if len(name) > 100 or not name.isprintable():
        raise StudyError(f"annotator name {name[:40]!r}: use at most 100 printable characters")
    if kind == PERSON and name.lower().startswith(JUDGE_PREFIX):
        raise StudyError(f"annotator name {name!r}: names starting with {JUDGE_PREFIX!r} are reserved for LLM judges")
    return name


def parse_aspects(spec: Optional[Sequence[str]]) -> Tuple[Aspect, ...]:
    """Aspects from the command line: each `name` (one of the paper's three) or `name=definition` (any other).
    None or empty: the paper's three."""
    if not spec:
        return PAPER_ASPECTS
    known = {a.name: a for a in PAPER_ASPECTS}
    aspects: List[Aspect] = []
    for item in spec:
        name, _, definition = str(item).partition("=")
        name, definition = name.strip(), definition.strip()
        if not _ASPECT_NAME.match(name):
            raise StudyError(f"--aspects: {name!r} is not a name (a letter, then letters, digits or '_'; at most 64)")
        if not definition:
            name = name.lower()
            if name not in known:
                raise StudyError(f"--aspects: {name!r} needs a definition ({name}=<what annotators judge>); only "
                                 f"{', '.join(known)} have the paper's")
            aspects.append(known[name])
        else:
            aspects.append(Aspect(name.lower(), name.replace("_", " ").capitalize(), definition))
    names = [a.name for a in aspects]
    if len(set(names)) != len(names):
        raise StudyError(f"--aspects: {sorted(n for n in names if names.count(n) > 1)[0]!r} given twice")
    return tuple(aspects)


# ---------------------------------------------------------------------------------------------------------------
# Reading two systems' outputs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Dialogue:
    """What annotators read before the two responses: the context turns (oldest first) with their roles, and the
    speaker's situation. `gold` is the dataset's response, kept for the report, never shown as a candidate."""

    turns: List[str]
    roles: List[str]
    situation: str = ""
    gold: Optional[str] = None

    def key(self) -> Tuple[Tuple[str, ...], str]:
        """What must agree for two sources to describe the same dialogue (whitespace-insensitive)."""
        return tuple(" ".join(t.split()) for t in self.turns), " ".join(self.situation.split())


def dialogue_of(turns: Sequence[str], situation: str = "", roles: Optional[Sequence[str]] = None,
                gold: Optional[str] = None) -> Dialogue:
    """A :class:`Dialogue`; roles default to alternating, ending with the speaker (EmpatheticDialogues' contexts)."""
    turns = [str(t) for t in turns]
    if roles is None:
        roles = ["speaker" if (len(turns) - 1 - i) % 2 == 0 else "listener" for i in range(len(turns))]
    return Dialogue(turns, [str(r) for r in roles], str(situation or ""), gold)


@dataclass
class SystemOutputs:
    """One system's responses by sample id (and the dialogues its file carries, if it does)."""

    path: str
    responses: Dict[str, str]
    dialogues: Dict[str, Dialogue] = field(default_factory=dict)
    kind: str = "jsonl"
    response_field: str = ""
    skipped: Dict[str, int] = field(default_factory=dict)  # reason -> count (failed requests, ...)


RESPONSE_FIELDS = ("generated_response", "response", "output", "answer", "prediction", "text")
"""Where a record's response is looked for, in this order: `evaluate.py`'s `generated_response` (the first one when
it is a list), a `response` (`prompt_openai.py` keeps the parsed reply there), then raw answers (`output`, written by
`generate_lora.py` and `prompt_openai.py`), read with the answer parser when one is given."""

ID_FIELDS = ("id", "sample_id", "pair_id")
HEADER_KEY = "__header__"  # the first line of iamm.llm's resumable result files


def _read_lines(path: str) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """`(line number, record)` of a JSONL file; :class:`StudyError` naming the first unreadable line."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    cut = "" if line.endswith("\n") else " (the file ends in the middle of it: was its writer killed?)"
                    raise StudyError(f"{path}, line {number}: not a JSON record ({error.msg}){cut}") from None
                if not isinstance(record, dict):
                    raise StudyError(f"{path}, line {number}: a JSON {type(record).__name__}, not an object")
                yield number, record
    except UnicodeDecodeError as error:
        raise StudyError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None


def _read_csv(path: str) -> Iterator[Tuple[int, Dict[str, Any]]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise StudyError(f"{path}: empty CSV (no header line)")
            try:
                for row in reader:
                    if None in row:
                        raise StudyError(f"{path}, line {reader.line_num}: more fields than the header has")
                    yield reader.line_num, row
            except csv.Error as error:
                raise StudyError(f"{path}, line {reader.line_num}: unreadable CSV ({error})") from None
    except UnicodeDecodeError as error:
        raise StudyError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None


def read_table(path: str) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """`(line number, record)` of a JSONL or CSV file (by extension: `.csv`, else JSONL)."""
    if not os.path.isfile(path):
        raise StudyError(f"{path}: no such file")
    return _read_csv(path) if path.lower().endswith(".csv") else _read_lines(path)


def _field(record: Mapping[str, Any], names: Sequence[str]) -> Optional[str]:
    return next((name for name in names if name in record), None)


def read_outputs(path: str, response_field: Optional[str] = None,
                 answer_parser: Optional[Callable[[str], str]] = None) -> SystemOutputs:
    """One system's responses from the file it wrote.

    Reads `evaluate.py`'s `predictions.jsonl` (with each sample's context and situation), `generate_lora.py`'s and
    `prompt_openai.py`'s result files (a `__header__` line, then records; the newest record of an id counts, failed
    requests are left out and counted), or any JSONL/CSV with an `id` and a response (:data:`RESPONSE_FIELDS`, or
    `response_field`). Raw LLM answers (`output`) go through `answer_parser` (text -> response) when one is given.

    Raises :class:`StudyError` naming the file and line: an unreadable line, a record without an id or a response,
    an id twice (in files without a header).
    """
    responses: Dict[str, str] = {}
    dialogues: Dict[str, Dialogue] = {}
    first_line: Dict[str, int] = {}
    skipped: Dict[str, int] = {}
    resumable = False
    used_field = ""
    for number, record in read_table(path):
        if HEADER_KEY in record:
            if first_line or skipped or resumable:
                raise StudyError(f"{path}, line {number}: a {HEADER_KEY} line after the first record")
            resumable = True
            continue
        id_field = _field(record, ID_FIELDS)
        if id_field is None or record[id_field] in (None, ""):
            raise StudyError(f"{path}, line {number}: no sample id (a field named {' or '.join(ID_FIELDS)}; "
                             f"keys: {', '.join(sorted(record)) or 'none'})")
        sample = str(record[id_field]).strip()
        if record.get("status") == "failed":  # a request that got no answer: no response of this system
            skipped["failed request"] = skipped.get("failed request", 0) + 1
            responses.pop(sample, None)
            continue
        if sample in first_line and not resumable:
            raise StudyError(f"{path}, line {number}: id {sample!r} again (first on line {first_line[sample]}); "
                             "one record per sample")
        first_line.setdefault(sample, number)
        name = response_field or _field(record, [f for f in RESPONSE_FIELDS if record.get(f) is not None])
        if name is None or name not in record:
            wanted = repr(response_field) if response_field else " or ".join(RESPONSE_FIELDS)
            raise StudyError(f"{path}, line {number} ({sample}): no response (a field named {wanted}; keys: "
                             f"{', '.join(sorted(record))}); name the field with --response_field")
        value = record[name]
        if isinstance(value, list):  # evaluate.py --num_return_sequences N: the first, as Dist-n counts it
            value = value[0] if value else ""
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise StudyError(f"{path}, line {number} ({sample}): {name!r} is a {type(value).__name__}, not text")
        if name in ("output", "answer", "prediction") and answer_parser is not None:
            value = answer_parser(value)
        used_field = used_field or name
        responses[sample] = value
        context = record.get("context")
        if isinstance(context, list):
            gold = record.get("gold_response", record.get("target"))
            dialogues[sample] = dialogue_of(context, record.get("situation") or "", record.get("context_roles"),
                                            gold if isinstance(gold, str) else None)
    return SystemOutputs(path, responses, dialogues, "resumable" if resumable else
                         ("csv" if path.lower().endswith(".csv") else "jsonl"), used_field, skipped)


# ---------------------------------------------------------------------------------------------------------------
# Pairs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Pair:
    """Two systems' responses to one dialogue. `first` says which system is shown as "Response 1"."""

    pair_id: str
    position: int
    dialogue: Dialogue
    response_a: str
    response_b: str
    first: str  # "a" or "b"

    @property
    def identical(self) -> bool:
        """Both responses say the same (whitespace ignored): a tie recorded without asking anyone."""
        return " ".join(self.response_a.split()) == " ".join(self.response_b.split())

    def shown(self) -> Tuple[str, str]:
        """("Response 1", "Response 2") as the annotators see them."""
        return (self.response_a, self.response_b) if self.first == "a" else (self.response_b, self.response_a)

    def to_system(self, screen_choice: str) -> str:
        """An answer on the screen ("1", "2", "equal") in system terms ("a", "b", "equal")."""
        if screen_choice not in SCREEN_CHOICES:
            raise StudyError(f"pair {self.pair_id}: answer {screen_choice!r} is not one of {', '.join(SCREEN_CHOICES)}")
        if screen_choice == "equal":
            return "equal"
        second = "b" if self.first == "a" else "a"
        return self.first if screen_choice == "1" else second

    def to_screen(self, choice: str) -> str:
        """An answer in system terms as the screen shows it."""
        if choice == "equal":
            return "equal"
        return "1" if choice == self.first else "2"


def _join(a: SystemOutputs, b: SystemOutputs, dialogues: Optional[Mapping[str, Dialogue]],
          data_name: str) -> Dict[str, Dialogue]:
    """The dialogue of every id both systems answered, checked to be the same wherever several sources give it."""
    common = sorted(set(a.responses) & set(b.responses))
    if not common:
        example_a = next(iter(a.responses), None)
        example_b = next(iter(b.responses), None)
        raise StudyError(f"{a.path} and {b.path} have no sample id in common ({len(a.responses)} and "
                         f"{len(b.responses)} ids, e.g. {example_a!r} and {example_b!r})")
    joined: Dict[str, Dialogue] = {}
    missing = []
    for sample in common:
        sources = [(name, source[sample]) for name, source in
                   ((data_name, dialogues or {}), (a.path, a.dialogues), (b.path, b.dialogues)) if sample in source]
        if not sources:
            missing.append(sample)
            continue
        (first_name, first), *others = sources
        for name, other in others:
            if other.key() != first.key():
                raise StudyError(f"id {sample!r} has two different dialogues: in {first_name} and in {name} "
                                 f"(last turn {first.turns[-1][:60]!r} against {other.turns[-1][:60]!r}): are both "
                                 "files of the same split?")
        gold = next((d.gold for _, d in sources if d.gold is not None), None)
        joined[sample] = Dialogue(first.turns, first.roles, first.situation, gold)
    if missing:
        raise StudyError(f"{len(missing)} of the {len(common)} ids in common (e.g. {missing[0]!r}) have no dialogue: "
                         f"neither file carries one; pass --data (the EmpatheticDialogues source) and --split")
    return joined


def draw_pairs(a: SystemOutputs, b: SystemOutputs, num_samples: Optional[int], seed: int,
               dialogues: Optional[Mapping[str, Dialogue]] = None, data_name: str = "--data") -> List[Pair]:
    """`num_samples` pairs (all when None) drawn at random with `seed` from the ids both systems answered, in a
    random order, each with a display order drawn from the same generator."""
    joined = _join(a, b, dialogues, data_name)
    ids = sorted(joined)
    if num_samples is not None:
        if num_samples < 1:
            raise StudyError(f"--num_samples must be >= 1, got {num_samples}")
        if num_samples > len(ids):
            raise StudyError(f"--num_samples {num_samples}, but the two files have only {len(ids)} ids in common "
                             f"(with a dialogue): ask for at most {len(ids)}")
    rng = random.Random(seed)
    chosen = rng.sample(ids, len(ids) if num_samples is None else num_samples)
    return [Pair(sample, position, joined[sample], a.responses[sample], b.responses[sample], rng.choice("ab"))
            for position, sample in enumerate(chosen)]


# ---------------------------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE pairs (
    pair_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    situation TEXT NOT NULL,
    turns TEXT NOT NULL,          -- JSON list of the context utterances, oldest first
    roles TEXT NOT NULL,          -- JSON list: speaker / listener per utterance
    gold TEXT,                    -- the dataset's response (the report's reference; never shown as a candidate)
    response_a TEXT NOT NULL,
    response_b TEXT NOT NULL,
    first TEXT NOT NULL CHECK (first IN ('a', 'b'))   -- the system shown as "Response 1"
);
CREATE TABLE annotators (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('person', 'judge')),
    details TEXT NOT NULL DEFAULT '{}',   -- JSON: a judge's model and settings
    first_seen TEXT NOT NULL
);
CREATE TABLE judgements (
    annotator TEXT NOT NULL REFERENCES annotators(name),
    pair_id TEXT NOT NULL REFERENCES pairs(pair_id),
    aspect TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'equal')),
    shown TEXT CHECK (shown IN ('1', '2', 'equal')),   -- what was clicked on the page (NULL: imported, judged)
    source TEXT NOT NULL,         -- page, import:<file>, judge:<results file>
    answered_at TEXT NOT NULL,
    revisions INTEGER NOT NULL DEFAULT 0,   -- how often the answer was replaced
    PRIMARY KEY (annotator, pair_id, aspect)
);
CREATE TABLE judge_outputs (
    annotator TEXT NOT NULL REFERENCES annotators(name),
    pair_id TEXT NOT NULL REFERENCES pairs(pair_id),
    shown_first TEXT NOT NULL CHECK (shown_first IN ('a', 'b')),   -- the system the judge read as "Response 1"
    raw TEXT NOT NULL,            -- the judge's whole answer
    verdicts TEXT NOT NULL,       -- JSON {aspect: "1" | "2" | "equal" | null (unreadable)}
    PRIMARY KEY (annotator, pair_id, shown_first)
);
"""


@dataclass
class Judgement:
    annotator: str
    kind: str
    pair_id: str
    aspect: str
    choice: str
    source: str = ""


class Study:
    """A study folder and its store (`study.sqlite`). Open one with :meth:`open`; create one with
    :func:`prepare_study`. Every method opens its own connection, so one `Study` serves many threads (the page's
    workers) and processes (a judge run beside the page)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.db_path = os.path.join(folder, STORE_NAME)
        with self.connect() as conn:
            rows = dict(conn.execute("SELECT key, value FROM meta"))
        self.meta: Dict[str, Any] = {k: json.loads(v) for k, v in rows.items()}
        if self.meta.get("format") != STUDY_FORMAT:
            raise StudyError(f"{self.db_path}: a study store of format {self.meta.get('format')!r}; this version "
                             f"reads format {STUDY_FORMAT}")
        self.aspects = tuple(Aspect(**a) for a in self.meta["aspects"])
        self.aspect_names = tuple(a.name for a in self.aspects)
        self._pairs: Optional[Dict[str, Pair]] = None

    @classmethod
    def open(cls, folder: str) -> "Study":
        """The study in `folder`; :class:`StudyError` if there is none."""
        path = os.path.join(folder, STORE_NAME)
        if not os.path.isfile(path):
            raise StudyError(f"{folder}: no study here (no {STORE_NAME}); create one with `scripts/ab_test.py "
                             "prepare --study <folder> ...`")
        try:
            return cls(folder)
        except sqlite3.DatabaseError as error:
            raise StudyError(f"{path}: not a study store ({error})") from None

    # -- connections ----------------------------------------------------------------------------------------------
    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that waits up to 30 s for a writer, and makes every commit durable (`synchronous=FULL`)."""
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (`BEGIN IMMEDIATE`): committed when the block ends, rolled back on an error. Writers
        of one process queue on a lock first (in arrival order), so that they do not poll SQLite's busy handler,
        whose growing sleeps give a few writers seconds of delay under load; other processes still wait on
        SQLite's own lock."""
        with self.connect() as conn, _WRITE_LOCKS.setdefault(os.path.abspath(self.db_path), threading.Lock()):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- pairs ------------------------------------------------------------------------------------------------------
    @property
    def name_a(self) -> str:
        return self.meta["name_a"]

    @property
    def name_b(self) -> str:
        return self.meta["name_b"]

    def pairs(self) -> List[Pair]:
        """Every pair, in the study's order."""
        if self._pairs is None:  # pairs never change after prepare_study
            with self.connect() as conn:
                rows = conn.execute("SELECT pair_id, position, situation, turns, roles, gold, response_a, response_b, "
                                    "first FROM pairs ORDER BY position").fetchall()
            self._pairs = {
                r[0]: Pair(r[0], r[1], Dialogue(json.loads(r[3]), json.loads(r[4]), r[2], r[5]), r[6], r[7], r[8])
                for r in rows}
        return list(self._pairs.values())

    def pair(self, pair_id: str) -> Pair:
        self.pairs()
        if pair_id not in self._pairs:
            raise StudyError(f"no pair {pair_id!r} in the study {self.folder}")
        return self._pairs[pair_id]

    def asked_pairs(self) -> List[Pair]:
        """The pairs annotators are asked about (all but those with identical responses)."""
        return [p for p in self.pairs() if not p.identical]

    def order_for(self, annotator: str) -> List[str]:
        """The order in which `annotator` sees the asked pairs: shuffled per annotator (from the study's seed and the
        name, so it is the same at every visit), which spreads position and fatigue effects over the pairs."""
        ids = [p.pair_id for p in self.asked_pairs()]
        random.Random(f"{self.meta['seed']}:{annotator}").shuffle(ids)
        return ids

    # -- answers ----------------------------------------------------------------------------------------------------
    def _ensure_annotator(self, conn: sqlite3.Connection, name: str, kind: str,
                          details: Optional[Mapping[str, Any]] = None) -> None:
        row = conn.execute("SELECT kind FROM annotators WHERE name = ?", (name,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO annotators (name, kind, details, first_seen) VALUES (?, ?, ?, ?)",
                         (name, kind, json.dumps(dict(details or {}), sort_keys=True), _now()))
        elif row[0] != kind:
            raise StudyError(f"annotator {name!r} is a {row[0]} in this study, not a {kind}: choose another name")
        elif details:
            conn.execute("UPDATE annotators SET details = ? WHERE name = ?", (json.dumps(dict(details), sort_keys=True), name))

    def _upsert(self, conn: sqlite3.Connection, annotator: str, pair_id: str, aspect: str, choice: str,
                shown: Optional[str], source: str) -> None:
        conn.execute(
            "INSERT INTO judgements (annotator, pair_id, aspect, choice, shown, source, answered_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (annotator, pair_id, aspect) DO UPDATE SET choice = excluded.choice, shown = excluded.shown, "
            "source = excluded.source, answered_at = excluded.answered_at, "
            "revisions = judgements.revisions + (judgements.choice != excluded.choice)",
            (annotator, pair_id, aspect, choice, shown, source, _now()))

    def _check_answer(self, pair: Pair, aspect: str, choice: str, where: str) -> None:
        if aspect not in self.aspect_names:
            raise StudyError(f"{where}: unknown aspect {aspect!r} (this study asks {', '.join(self.aspect_names)})")
        if choice not in CHOICES:
            raise StudyError(f"{where}: unknown choice {choice!r} (a, b or equal)")
        if pair.identical:
            raise StudyError(f"{where}: pair {pair.pair_id!r} has identical responses; it is recorded as a tie and "
                             "takes no answers")

    def save_screen_answers(self, annotator: str, pair_id: str, answers: Mapping[str, str]) -> Dict[str, str]:
        """Save what a person picked on the page for one pair: `answers` maps every aspect of the study to "1", "2" or
        "equal". All aspects are written in one transaction, committed before this returns; answering again
        replaces. Returns the answers in system terms."""
        annotator = check_annotator_name(annotator)
        pair = self.pair(pair_id)
        missing = [a for a in self.aspect_names if answers.get(a) in (None, "")]
        if missing:
            raise StudyError(f"answer every aspect first ({', '.join(missing)} not answered)")
        unknown = sorted(set(answers) - set(self.aspect_names))
        if unknown:
            raise StudyError(f"unknown aspect {unknown[0]!r} (this study asks {', '.join(self.aspect_names)})")
        system = {aspect: pair.to_system(str(answers[aspect])) for aspect in self.aspect_names}
        for aspect, choice in system.items():
            self._check_answer(pair, aspect, choice, f"pair {pair_id}")
        with self.transaction() as conn:
            self._ensure_annotator(conn, annotator, PERSON)
            for aspect in self.aspect_names:
                self._upsert(conn, annotator, pair_id, aspect, system[aspect], str(answers[aspect]), "page")
        return system

    def answers_of(self, annotator: str) -> Dict[str, Dict[str, str]]:
        """`{pair_id: {aspect: choice}}` of one annotator (system terms)."""
        with self.connect() as conn:
            rows = conn.execute("SELECT pair_id, aspect, choice FROM judgements WHERE annotator = ?",
                                (annotator,)).fetchall()
        answers: Dict[str, Dict[str, str]] = {}
        for pair_id, aspect, choice in rows:
            answers.setdefault(pair_id, {})[aspect] = choice
        return answers

    def complete(self, answers: Mapping[str, Mapping[str, str]]) -> set:
        """The pair ids of `answers` with every aspect answered."""
        return {pair for pair, by_aspect in answers.items() if all(a in by_aspect for a in self.aspect_names)}

    def judgements(self) -> List[Judgement]:
        """Every answer in the store, with its annotator's kind."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT j.annotator, a.kind, j.pair_id, j.aspect, j.choice, j.source FROM judgements j "
                "JOIN annotators a ON a.name = j.annotator ORDER BY j.annotator, j.pair_id, j.aspect").fetchall()
        return [Judgement(*row) for row in rows]

    def annotators(self) -> Dict[str, Dict[str, Any]]:
        """`{name: {"kind", "details", "first_seen"}}`."""
        with self.connect() as conn:
            rows = conn.execute("SELECT name, kind, details, first_seen FROM annotators ORDER BY name").fetchall()
        return {r[0]: {"kind": r[1], "details": json.loads(r[2]), "first_seen": r[3]} for r in rows}

    def record_judge(self, annotator: str, details: Mapping[str, Any],
                     outputs: Sequence[Tuple[str, str, str, Mapping[str, Optional[str]]]],
                     verdicts: Mapping[str, Mapping[str, str]], source: str) -> None:
        """Store an LLM judge's raw answers (`(pair_id, shown_first, raw, {aspect: screen verdict or None})`) and its
        combined verdicts (`{pair_id: {aspect: choice}}`, system terms) in one transaction; re-recording replaces."""
        annotator = check_annotator_name(annotator, JUDGE)
        with self.transaction() as conn:
            self._ensure_annotator(conn, annotator, JUDGE, details)
            for pair_id, shown_first, raw, parsed in outputs:
                self.pair(pair_id)
                conn.execute("INSERT OR REPLACE INTO judge_outputs VALUES (?, ?, ?, ?, ?)",
                             (annotator, pair_id, shown_first, raw, json.dumps(dict(parsed), sort_keys=True)))
            for pair_id, by_aspect in verdicts.items():
                pair = self.pair(pair_id)
                for aspect, choice in by_aspect.items():
                    self._check_answer(pair, aspect, choice, f"judge {annotator}, pair {pair_id}")
                    self._upsert(conn, annotator, pair_id, aspect, choice, None, source)

    def judge_outputs(self, annotator: Optional[str] = None) -> List[Dict[str, Any]]:
        """The raw answers of the LLM judges (all, or one annotator's)."""
        query = "SELECT annotator, pair_id, shown_first, raw, verdicts FROM judge_outputs"
        args: Tuple[Any, ...] = ()
        if annotator is not None:
            query, args = query + " WHERE annotator = ?", (annotator,)
        with self.connect() as conn:
            rows = conn.execute(query + " ORDER BY annotator, pair_id, shown_first", args).fetchall()
        return [{"annotator": r[0], "pair_id": r[1], "shown_first": r[2], "raw": r[3], "verdicts": json.loads(r[4])}
                for r in rows]

    def unreadable_judge_answers(self) -> Dict[str, int]:
        """Per judge, how many of its raw answers had an aspect whose verdict could not be read."""
        counts: Dict[str, int] = {}
        for output in self.judge_outputs():
            if any(v is None for v in output["verdicts"].values()):
                counts[output["annotator"]] = counts.get(output["annotator"], 0) + 1
        return counts

    # -- import -----------------------------------------------------------------------------------------------------
    def import_judgements(self, path: str, kind: str = PERSON) -> Dict[str, int]:
        """Judgements collected elsewhere (a crowdsourcing export): CSV or JSONL with `pair_id` (or `id`),
        `annotator`, `aspect` and `choice`, where the choice names a system: `a`, `b`, `equal` (or the systems'
        names as the study knows them). All lines are validated first; one bad line (unknown pair, aspect, choice or
        annotator name; a pair with identical responses; the same key twice with different choices) refuses the
        whole file with its line number, and nothing is written. Answers already in the store under the same key
        are replaced. Returns counts (`records`, `annotators`, `replaced`)."""
        if kind not in ANNOTATOR_KINDS:
            raise StudyError(f"--kind must be one of {', '.join(ANNOTATOR_KINDS)}, got {kind!r}")
        names = {"a": "a", "b": "b", "equal": "equal", "tie": "equal", self.name_a.lower(): "a",
                 self.name_b.lower(): "b"}
        rows: Dict[Tuple[str, str, str], Tuple[str, int]] = {}
        pairs = {p.pair_id: p for p in self.pairs()}
        for number, record in read_table(path):
            where = f"{path}, line {number}"
            id_field = _field(record, ("pair_id", "id"))
            missing = [n for n, present in (("pair_id", id_field), ("annotator", "annotator" in record),
                                            ("aspect", "aspect" in record), ("choice", "choice" in record))
                       if not present]
            if missing:
                raise StudyError(f"{where}: no {', '.join(missing)} (columns: pair_id, annotator, aspect, choice)")
            pair_id = str(record[id_field]).strip()
            if pair_id not in pairs:
                raise StudyError(f"{where}: unknown pair {pair_id!r} (not in this study)")
            try:
                annotator = check_annotator_name(str(record["annotator"] or ""), kind)
            except StudyError as error:
                raise StudyError(f"{where}: {error}") from None
            aspect = str(record["aspect"]).strip().lower()
            raw_choice = str(record["choice"]).strip()
            choice = names.get(raw_choice.lower())
            if choice is None:
                raise StudyError(f"{where}: unknown choice {raw_choice!r} (a, b or equal, or the systems' names "
                                 f"{self.name_a!r} / {self.name_b!r}; never a screen position such as 1 or 2)")
            self._check_answer(pairs[pair_id], aspect, choice, where)
            key = (annotator, pair_id, aspect)
            if key in rows and rows[key][0] != choice:
                raise StudyError(f"{where}: {annotator} answered {aspect} of pair {pair_id} already on line "
                                 f"{rows[key][1]} with another choice")
            rows[key] = (choice, number)
        if not rows:
            raise StudyError(f"{path}: no judgements in it")
        source = f"import:{os.path.basename(path)}"
        with self.transaction() as conn:
            replaced = 0
            for annotator in sorted({k[0] for k in rows}):
                self._ensure_annotator(conn, annotator, kind)
            for (annotator, pair_id, aspect), (choice, _) in rows.items():
                replaced += conn.execute("SELECT 1 FROM judgements WHERE annotator = ? AND pair_id = ? AND aspect = ?",
                                         (annotator, pair_id, aspect)).fetchone() is not None
                self._upsert(conn, annotator, pair_id, aspect, choice, None, source)
        return {"records": len(rows), "annotators": len({k[0] for k in rows}), "replaced": replaced}


def prepare_study(folder: str, a: SystemOutputs, b: SystemOutputs, name_a: str, name_b: str,
                  num_samples: Optional[int] = None, seed: int = 0, aspects: Sequence[Aspect] = PAPER_ASPECTS,
                  dialogues: Optional[Mapping[str, Dialogue]] = None, data_source: Optional[str] = None,
                  title: Optional[str] = None) -> Study:
    """Create a study in `folder` (which must hold no study yet) from two systems' outputs.

    The pairs are drawn by :func:`draw_pairs`; the store is written to a temporary file and moved into place only
    when complete, so a failed or interrupted prepare leaves no study behind. Raises :class:`StudyError` (one line)
    for any bad input.
    """
    for flag, name in (("--name_a", name_a), ("--name_b", name_b)):
        if not name or not name.strip() or len(name) > 64:
            raise StudyError(f"{flag}: give the system a short name (1-64 characters)")
    if name_a.strip().lower() == name_b.strip().lower():
        raise StudyError(f"--name_a and --name_b are both {name_a!r}: give the two systems different names")
    if name_a.strip().lower() in ("b", "equal") or name_b.strip().lower() in ("a", "equal"):
        raise StudyError("--name_a may not be 'b' or 'equal', --name_b not 'a' or 'equal' (imported answers name "
                         "the systems by those words)")
    if not aspects:
        raise StudyError("a study needs at least one aspect")
    if os.path.exists(os.path.join(folder, STORE_NAME)):
        raise StudyError(f"{folder} already holds a study ({STORE_NAME}): choose another --study (a study's pairs "
                         "are never redrawn over its answers)")
    pairs = draw_pairs(a, b, num_samples, seed, dialogues)
    meta = {
        "format": STUDY_FORMAT, "title": title or f"{name_a.strip()} vs {name_b.strip()}",
        "name_a": name_a.strip(), "name_b": name_b.strip(), "seed": seed, "num_samples": len(pairs),
        "aspects": [asdict(x) for x in aspects], "created": _now(), "data": data_source,
        "sources": {side: {"path": os.path.abspath(o.path), "sha256": _sha256(o.path), "kind": o.kind,
                           "response_field": o.response_field, "responses": len(o.responses), "skipped": o.skipped}
                    for side, o in (("a", a), ("b", b))},
        "ids_in_common": len(set(a.responses) & set(b.responses)),
    }
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".study-", suffix=".sqlite", dir=folder)
    os.close(handle)
    try:
        conn = sqlite3.connect(temporary)
        try:
            conn.executescript(SCHEMA)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            conn.executemany(
                "INSERT INTO pairs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(p.pair_id, p.position, p.dialogue.situation, json.dumps(p.dialogue.turns, ensure_ascii=False),
                  json.dumps(p.dialogue.roles), p.dialogue.gold, p.response_a, p.response_b, p.first) for p in pairs])
            conn.commit()
            conn.execute("PRAGMA journal_mode=WAL")  # persistent: readers and the writer do not block each other
        finally:
            conn.close()
        os.replace(temporary, os.path.join(folder, STORE_NAME))
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return Study.open(folder)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------------


def fleiss_kappa(table: Sequence[Sequence[int]]) -> Optional[float]:
    """Fleiss' kappa of a subjects x categories table of counts (how many raters put each subject in each category).

    Subjects with fewer than two ratings are left out. With the same number of ratings per subject this is Fleiss
    (1971) exactly (the same as statsmodels' `fleiss_kappa`); with different numbers, each subject's agreement is
    computed over its own raters and the category shares over all ratings (the usual generalisation). None when it
    is undefined: fewer than one subject, or every rating in one category (no chance disagreement to beat).
    """
    rows = [list(map(int, row)) for row in table if sum(row) >= 2]
    if not rows:
        return None
    total = sum(sum(row) for row in rows)
    shares = [sum(row[j] for row in rows) / total for j in range(len(rows[0]))]
    expected = sum(p * p for p in shares)
    observed = sum((sum(c * c for c in row) - sum(row)) / (sum(row) * (sum(row) - 1)) for row in rows) / len(rows)
    if expected >= 1 - 1e-12:
        return None
    return (observed - expected) / (1 - expected)


def cohen_kappa(first: Sequence[str], second: Sequence[str], categories: Sequence[str] = CHOICES) -> Optional[float]:
    """Cohen's kappa of two raters' labels of the same items (None when undefined: no items, or both raters always
    give one and the same label)."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} labels against {len(second)}")
    n = len(first)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(first, second)) / n
    expected = sum((first.count(c) / n) * (second.count(c) / n) for c in categories)
    if expected >= 1 - 1e-12:
        return None
    return (observed - expected) / (1 - expected)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test of `wins` against `losses` (ties left out): the probability, if both systems were
    equally likely to be preferred, of a split at least this uneven."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def verdict(choices: Sequence[str]) -> str:
    """A pair's verdict from its annotators' answers: the most frequent; Equal when two answers share the top count."""
    counts = {c: choices.count(c) for c in CHOICES}
    top = max(counts.values())
    leaders = [c for c, n in counts.items() if n == top]
    return leaders[0] if len(leaders) == 1 else "equal"


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------

GROUPS = (("people", PERSON), ("judges", JUDGE))


def _group_report(study: Study, answers: Dict[str, Dict[str, Dict[str, str]]]) -> Dict[str, Any]:
    """Win/Lose/Equal, kappa and the sign test of one group of annotators (`{annotator: {pair: {aspect: choice}}}`)."""
    identical = [p.pair_id for p in study.pairs() if p.identical]
    asked = [p.pair_id for p in study.asked_pairs()]
    report: Dict[str, Any] = {"annotators": sorted(answers), "aspects": {}}
    for aspect in study.aspect_names:
        points = {c: 0 for c in CHOICES}
        table, verdicts = [], {}
        for pair_id in asked:
            choices = [by_pair[pair_id][aspect] for by_pair in answers.values()
                       if aspect in by_pair.get(pair_id, {})]
            for c in choices:
                points[c] += 1
            if choices:
                table.append([choices.count(c) for c in CHOICES])
                verdicts[pair_id] = verdict(choices)
        annotated = [name for name, by_pair in answers.items()
                     if any(aspect in by_pair.get(p, {}) for p in asked)]
        points["equal"] += len(identical) * len(annotated)  # identical responses: Equal for every annotator
        total = sum(points.values())
        wins = sum(v == "a" for v in verdicts.values())
        losses = sum(v == "b" for v in verdicts.values())
        kappa = fleiss_kappa(table)
        report["aspects"][aspect] = {
            "win": 100 * points["a"] / total if total else None,
            "lose": 100 * points["b"] / total if total else None,
            "equal": 100 * points["equal"] / total if total else None,
            "points": total,
            "kappa": kappa,
            "kappa_pairs": sum(sum(row) >= 2 for row in table),
            "pair_verdicts": {"win": wins, "lose": losses, "equal": len(verdicts) - wins - losses + len(identical)},
            "sign_test_p": sign_test(wins, losses),
            "verdicts": verdicts,
        }
    return report


def build_report(study: Study) -> Dict[str, Any]:
    """The study's results (see the module docstring for how answers are counted), as plain JSON-able values:
    `study` (names, pair counts, aspects), `groups` (`people`, `judges`: per aspect `win`/`lose`/`equal` in
    percent of the answers, `kappa`, `sign_test_p`, pair verdicts), and `judge_agreement` (per aspect and judge,
    Cohen's kappa of the judge's verdicts against the people's majority on the pairs both answered)."""
    kinds = {name: info["kind"] for name, info in study.annotators().items()}
    by_group: Dict[str, Dict[str, Dict[str, Dict[str, str]]]] = {group: {} for group, _ in GROUPS}
    for j in study.judgements():
        group = "people" if kinds[j.annotator] == PERSON else "judges"
        by_group[group].setdefault(j.annotator, {}).setdefault(j.pair_id, {})[j.aspect] = j.choice
    pairs = study.pairs()
    report: Dict[str, Any] = {
        "study": {"title": study.meta["title"], "name_a": study.name_a, "name_b": study.name_b,
                  "pairs": len(pairs), "identical_pairs": sum(p.identical for p in pairs),
                  "aspects": list(study.aspect_names), "seed": study.meta["seed"]},
        "groups": {group: _group_report(study, answers) for group, answers in by_group.items() if answers},
        "judge_agreement": {},
    }
    report["study"]["unreadable_judge_answers"] = sum(study.unreadable_judge_answers().values())
    people = report["groups"].get("people")
    judges = by_group["judges"]
    if people and judges:
        for aspect in study.aspect_names:
            human = people["aspects"][aspect]["verdicts"]
            rows = {}
            candidates = {name: {p: a[aspect] for p, a in by_pair.items() if aspect in a}
                          for name, by_pair in judges.items()}
            if len(judges) > 1:
                candidates["judges (majority)"] = report["groups"]["judges"]["aspects"][aspect]["verdicts"]
            for name, theirs in candidates.items():
                shared = sorted(set(human) & set(theirs))
                x, y = [theirs[p] for p in shared], [human[p] for p in shared]
                rows[name] = {"pairs": len(shared), "cohen_kappa": cohen_kappa(x, y),
                              "agreement": 100 * sum(a == b for a, b in zip(x, y)) / len(shared) if shared else None}
            report["judge_agreement"][aspect] = rows
    return report


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def _num(value: Optional[float], digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return f"{value:.3g}" if value >= 0.001 else "<0.001"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def report_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: first laid out like the paper's Table 2 (per group, Win / Lose / kappa for each
    aspect), then the details (Equal, answers, the pairs' verdicts and the sign test), then the judges' agreement
    with the people."""
    study = report["study"]
    comparison = f"{_md_escape(study['name_a'])} vs {_md_escape(study['name_b'])}"
    aspects = study["aspects"]
    short = [PAPER_SHORT_NAMES.get(a, a.capitalize()) for a in aspects]
    lines = [f"# A/B study: {_md_escape(study['title'])}", "",
             f"{study['pairs']} pairs ({study['identical_pairs']} with identical responses, counted as Equal for every "
             f"annotator and left out of kappa and the sign test); Win / Lose / Equal in % of the answers, from "
             f"{_md_escape(study['name_a'])}'s side.", ""]
    if not report["groups"]:
        return "\n".join(lines + ["No answers yet."])
    header = "| Comparison | " + " | ".join(f"{s} Win | {s} Lose | {s} κ" for s in short) + " |"
    lines += [header, "|---|" + "---:|" * (3 * len(aspects))]
    for group, data in report["groups"].items():
        cells = []
        for aspect in aspects:
            a = data["aspects"][aspect]
            cells += [_pct(a["win"]), _pct(a["lose"]), _num(a["kappa"])]
        lines.append(f"| {comparison} ({group}, {len(data['annotators'])}) | " + " | ".join(cells) + " |")
    lines.append("")
    lines += ["| Group | Aspect | Win | Lose | Equal | answers | κ over pairs | pairs won / lost / equal | "
              "sign test p |", "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for group, data in report["groups"].items():
        for aspect in aspects:
            a = data["aspects"][aspect]
            v = a["pair_verdicts"]
            lines.append(f"| {group} | {aspect} | {_pct(a['win'])} | {_pct(a['lose'])} | {_pct(a['equal'])} | "
                         f"{a['points']} | {_num(a['kappa'])} ({a['kappa_pairs']}) | {v['win']} / {v['lose']} / "
                         f"{v['equal']} | {_p(a['sign_test_p'])} |")
    for group, data in report["groups"].items():
        lines.append("")
        lines.append(f"{group.capitalize()}: {', '.join(_md_escape(n) for n in data['annotators'])}.")
    if study.get("unreadable_judge_answers"):
        lines.append(f"Judge answers with an unreadable verdict: {study['unreadable_judge_answers']} (recorded, never "
                     "guessed: those pairs have no verdict from that judge).")
    if report.get("judge_agreement"):
        lines += ["", "Agreement of the LLM judges with the people's verdicts (Cohen's κ; agreement in %):", "",
                  "| Judge | " + " | ".join(f"{s} κ | {s} agree | pairs" for s in short) + " |",
                  "|---|" + "---:|" * (3 * len(aspects))]
        names = list(next(iter(report["judge_agreement"].values())))
        for name in names:
            cells = []
            for aspect in aspects:
                row = report["judge_agreement"][aspect][name]
                cells += [_num(row["cohen_kappa"]), _pct(row["agreement"]), str(row["pairs"])]
            lines.append(f"| {_md_escape(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_json(report: Mapping[str, Any]) -> str:
    """The report as JSON (the per-pair verdicts included)."""
    return json.dumps(report, indent=2, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------------------------


def study_status(study: Study) -> Dict[str, Any]:
    """Answers per annotator and aspect, pairs each annotator has completed, and pairs nobody has completed."""
    asked = {p.pair_id for p in study.asked_pairs()}
    per: Dict[str, Dict[str, Any]] = {}
    annotators = study.annotators()
    completed_by_anyone: Dict[str, set] = {PERSON: set(), JUDGE: set()}
    for name, info in annotators.items():
        answers = study.answers_of(name)
        complete = study.complete(answers) & asked
        completed_by_anyone[info["kind"]] |= complete
        per[name] = {"kind": info["kind"], "complete": len(complete), "of": len(asked),
                     "answers": {a: sum(a in x for x in answers.values()) for a in study.aspect_names}}
    for name, count in study.unreadable_judge_answers().items():
        per[name]["unreadable_answers"] = count
    pairs = study.pairs()
    return {"study": study.folder, "title": study.meta["title"], "name_a": study.name_a, "name_b": study.name_b,
            "pairs": len(pairs), "identical_pairs": len(pairs) - len(asked), "aspects": list(study.aspect_names),
            "annotators": per,
            "open_pairs": {"people": len(asked - completed_by_anyone[PERSON]),
                           "judges": len(asked - completed_by_anyone[JUDGE])}}


def status_text(status: Mapping[str, Any]) -> str:
    """:func:`study_status` as a few lines of text."""
    lines = [f"{status['study']}: {status['title']} ({status['pairs']} pairs, {status['identical_pairs']} with "
             f"identical responses, not asked; aspects: {', '.join(status['aspects'])})"]
    if not status["annotators"]:
        lines.append("no answers yet")
    width = max([len(n) for n in status["annotators"]] + [9])
    for name, row in status["annotators"].items():
        answers = ", ".join(f"{a} {n}" for a, n in row["answers"].items())
        extra = f"; {row['unreadable_answers']} unreadable judge answers" if row.get("unreadable_answers") else ""
        lines.append(f"  {name:<{width}}  {row['kind']:<6}  {row['complete']:>4} of {row['of']} pairs complete "
                     f"({answers}){extra}")
    lines.append(f"pairs no person has completed: {status['open_pairs']['people']}; no judge: "
                 f"{status['open_pairs']['judges']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Export (for publishing)
# ---------------------------------------------------------------------------------------------------------------


def export_study(study: Study, output_dir: str, anonymize: bool = True) -> Dict[str, Any]:
    """Write the study as a dataset folder: `data/pairs-*.parquet` (dialogue, both responses, display order, gold),
    `data/judgements-*.parquet` (one row per answer) and `data/judge_outputs-*.parquet` (the judges' raw answers),
    `report.json` and `report.md`, and `study.json` (settings). With `anonymize`, people are named `annotator-1`,
    `annotator-2`, ... (in order of their first answer); judges keep their model names. Returns `study.json`."""
    from datasets import Dataset

    annotators = study.annotators()
    people = sorted((n for n, i in annotators.items() if i["kind"] == PERSON), key=lambda n: (annotators[n]["first_seen"], n))
    rename = {n: f"annotator-{i}" for i, n in enumerate(people, start=1)} if anonymize else {}
    pairs = study.pairs()
    tables = {
        "pairs": [{"pair_id": p.pair_id, "position": p.position, "situation": p.dialogue.situation,
                   "context": p.dialogue.turns, "context_roles": p.dialogue.roles, "gold_response": p.dialogue.gold or "",
                   "response_a": p.response_a, "response_b": p.response_b, "shown_first": p.first,
                   "identical": p.identical} for p in pairs],
        "judgements": [{"annotator": rename.get(j.annotator, j.annotator), "kind": j.kind, "pair_id": j.pair_id,
                        "aspect": j.aspect, "choice": j.choice, "source": j.source.split(":")[0]}
                       for j in study.judgements()],
        "judge_outputs": [{**o, "verdicts": json.dumps(o["verdicts"], sort_keys=True)} for o in study.judge_outputs()],
    }
    os.makedirs(os.path.join(output_dir, "data"), exist_ok=True)
    for name, rows in tables.items():
        if rows:
            Dataset.from_list(rows).to_parquet(os.path.join(output_dir, "data", f"{name}-00000-of-00001.parquet"))
    report = build_report(study)
    if rename:
        report = json.loads(json.dumps(report))
        for group in report["groups"].values():
            group["annotators"] = [rename.get(n, n) for n in group["annotators"]]
    with open(os.path.join(output_dir, "report.json"), "w", encoding="utf-8") as f:
        f.write(report_json(report))
    with open(os.path.join(output_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(report_markdown(report) + "\n")
    info = {k: v for k, v in study.meta.items() if k != "sources"}
    info["sources"] = {side: {k: v for k, v in s.items() if k != "path"} | {"file": os.path.basename(s["path"])}
                       for side, s in study.meta["sources"].items()}
    info["counts"] = {name: len(rows) for name, rows in tables.items()}
    info["annotators"] = {"people": len(people), "judges": sum(i["kind"] == JUDGE for i in annotators.values()),
                          "anonymized": bool(anonymize)}
    with open(os.path.join(output_dir, "study.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, ensure_ascii=False)
    return info


IMPORT_COLUMNS = ("pair_id", "annotator", "aspect", "choice")


def export_answers_csv(study: Study, path: str, kind: str = PERSON) -> int:
    """Write the answers of one kind of annotator as CSV in the format :meth:`Study.import_judgements` reads
    (`pair_id, annotator, aspect, choice`): a study annotated elsewhere (a Space) comes home this way. Returns the
    number of rows."""
    rows = [(j.pair_id, j.annotator, j.aspect, j.choice) for j in study.judgements() if j.kind == kind]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(IMPORT_COLUMNS)
        writer.writerows(rows)
    return len(rows)


def copy_store(study: Study, folder: str) -> str:
    """A consistent copy of the study's store (answers committed so far, WAL included) in `folder`."""
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, STORE_NAME)
    if os.path.exists(target):
        raise StudyError(f"{target} exists: copy the study into an empty folder")
    with study.connect() as conn:
        conn.execute("VACUUM INTO ?", (target,))
    conn = sqlite3.connect(target)
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # VACUUM INTO writes a rollback-journal database
    finally:
        conn.close()
    return target


def load_dialogues(source: str, split: str) -> Dict[str, Dialogue]:
    """The dialogue of every listener-turn sample of an EmpatheticDialogues split (any form
    `load_empathetic_dialogues` reads), by sample id (`<conv_id>#<turn>`, the id of every output file this package
    writes)."""
    from .data import build_samples, load_empathetic_dialogues

    conversations = load_empathetic_dialogues(source, splits=[split])
    if split not in conversations:
        raise StudyError(f"{source}: no {split!r} split (it has {', '.join(conversations) or 'none'}); pass --split")
    samples = build_samples(conversations[split])
    return {f"{s['conv_id']}#{s['turn']}": Dialogue(list(s["context"]), list(s["context_roles"]), s["situation"],
                                                     s["target"])
            for s in samples}


__all__ = [
    "Aspect", "CHOICES", "Dialogue", "JUDGE", "Judgement", "PAPER_ASPECTS", "PERSON", "Pair", "SCREEN_CHOICES",
    "Study", "StudyError", "SystemOutputs", "build_report", "check_annotator_name", "cohen_kappa", "copy_store",
    "dialogue_of", "draw_pairs", "export_answers_csv", "export_study", "fleiss_kappa", "load_dialogues", "parse_aspects", "prepare_study", "read_outputs",
    "read_table", "report_json", "report_markdown", "sign_test", "status_text", "study_status", "verdict",
]
