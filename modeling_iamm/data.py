"""EmpatheticDialogues (Rashkin et al., 2019) loading: every form users have, into one `DatasetDict` of conversations.

Forms read by :func:`load_empathetic_dialogues`:

* the original release CSVs (`conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags`,
  written without quoting, commas inside text as `_comma_`), and quoted CSVs with the same column names;
* JSONL (optionally gzipped) or parquet files with one row per utterance (the release's columns, as in the
  parquet copies on the Hub) or one row per conversation (`conv_id, emotion, situation, turns=[{utterance_idx,
  speaker, text}]`, or `utterances=[...]`);
* a Hub dataset id (any of the row forms above), when online.

A conversation row is `{conv_id, emotion, situation, utterances: [str], speakers: ["speaker"|"listener"]}`;
the speaker is the one who wrote the situation and speaks at odd `utterance_idx`. A file's split is its name in
lower case (`Train.csv` is `train`); split names `validation` and `dev` are renamed `valid`. Text files are UTF-8,
with or without a byte-order mark. Text keeps its case here (normalisation happens in the tokenizer, see
:mod:`modeling_iamm.text`); only the release's `_comma_` escaping is undone.

The release format is read strictly. A line must have the 8 columns (a 9th is the test split's inline label
candidates, accepted only when `selfeval` still has its `a|b|c_d|e|f` shape, i.e. no text comma shifted the
columns); more fields mean a comma inside `prompt` or `utterance` not written as `_comma_`, which cannot be undone
unambiguously (either text could hold it), so it is an error naming the line, never a silently cut text; the one
exception is an utterance that ends with an unescaped comma (an empty field right after it, then the `selfeval` and
`tags` columns), which keeps its comma. Fewer fields mean a cut line. A quoted CSV row must have as many values as
the header and close its quotes. Rows of one conversation must agree on the emotion, `speaker` (when given) must
match the parity of `utterance_idx` (odd: the speaker), and turns must be numbered 1..n without gaps. A split may
come from one file or from shards (`train-00000-of-00002.parquet`, ...), never from two files of different names,
cases or formats (`train.csv` and `train.jsonl`, or `Train.csv` and `train.csv`, would load every conversation
twice). A file that is not UTF-8, holds no conversation or whose every conversation is invalid is an error naming
it.

Bad input raises :class:`EDFormatError` naming the file, the line (or row) and the field. With
`skip_invalid=True` the affected conversations are dropped instead, and a :class:`SkipReport` counts them by
reason (logged, and returned with `return_report=True`): nothing is ever dropped silently.

:func:`build_samples` turns conversations into training samples: one per listener turn, with all earlier
utterances as context.
"""

import csv
import gzip
import io
import json
import logging
import os
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import datasets
from datasets import Dataset, DatasetDict, Features, Sequence, Value

from .configuration_iamm import EMOTION_LABELS
from .text import clean_release_text

logger = logging.getLogger(__name__)

RELEASE_COLUMNS = ["conv_id", "utterance_idx", "context", "prompt", "speaker_idx", "utterance", "selfeval", "tags"]
SPLIT_ALIASES = {"validation": "valid", "dev": "valid"}
DATA_EXTENSIONS = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
SPEAKER, LISTENER = "speaker", "listener"
EMOTION_TO_ID = {label: i for i, label in enumerate(EMOTION_LABELS)}

CONVERSATION_FEATURES = Features(
    {
        "conv_id": Value("string"),
        "emotion": Value("string"),
        "situation": Value("string"),
        "utterances": Sequence(Value("string")),
        "speakers": Sequence(Value("string")),
    }
)

SAMPLE_FEATURES = Features(
    {
        "conv_id": Value("string"),
        "turn": Value("int32"),
        "emotion": Value("string"),
        "emotion_id": Value("int32"),
        "situation": Value("string"),
        "context": Sequence(Value("string")),
        "context_roles": Sequence(Value("string")),
        "target": Value("string"),
    }
)


SKIP_HINT = "Fix the record, or pass {skip} to drop the conversation it belongs to (the drop is counted and reported)"
"""What an invalid record's error advises; `{skip}` is `skip_invalid=True` in Python, `--skip_invalid true` for the
scripts (:meth:`EDFormatError.cli_message`)."""


class EDFormatError(ValueError):
    """A record of an EmpatheticDialogues file is malformed; says which file, line/row and field.

    Without `hint`, the advice is to fix the record or skip its conversation (`skip_invalid=True`), which a loader
    only raises when it was not skipping; errors that skipping cannot help (a file that cannot be decoded, a file
    without conversations) give their own `hint`."""

    def __init__(self, source: str, location: str, field: str, message: str, conv_id: Optional[str] = None,
                 hint: Optional[str] = None):
        self.source, self.location, self.field, self.reason = source, location, field, message
        self.conv_id = conv_id  # the conversation the record belongs to, when it can be told
        self.hint = hint
        super().__init__(self._text(hint or SKIP_HINT.format(skip="skip_invalid=True")))

    def _text(self, hint: str) -> str:
        return f"{self.source}, {self.location}, field '{self.field}': {self.reason}. {hint}."

    def cli_message(self) -> str:
        """The message in the scripts' words (`--skip_invalid true`)."""
        return self._text(self.hint or SKIP_HINT.format(skip="--skip_invalid true"))


@dataclass
class SkipReport:
    """What `skip_invalid=True` dropped: conversations per (split, reason), and the first few errors verbatim."""

    dropped: Counter = field(default_factory=Counter)
    examples: List[str] = field(default_factory=list)

    def add(self, split: str, error: EDFormatError) -> None:
        self.dropped[(split, f"{error.field}: {error.reason}")] += 1
        if len(self.examples) < 20:
            self.examples.append(str(error))

    @property
    def total(self) -> int:
        return sum(self.dropped.values())

    def __str__(self) -> str:
        if not self.dropped:
            return "no invalid records"
        lines = [f"skipped {self.total} invalid conversation(s):"]
        lines += [f"  [{split}] {n} x {reason}" for (split, reason), n in sorted(self.dropped.items())]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Readers: each yields (location, row-dict) pairs
# ----------------------------------------------------------------------------------------------------------


def _open_text(path: str) -> io.TextIOBase:
    # utf-8-sig: a byte-order mark (spreadsheet exports write one) is not part of the first column's name
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


_SELFEVAL = re.compile(r"^(\d+\|\d+\|\d+_\d+\|\d+\|\d+)?$")  # the release's self-evaluation scores, or empty
_SHARD = re.compile(r"^[^-]+-\d+-of-\d+\.")  # Hub shards: train-00000-of-00002.parquet


def _release_row(path: str, lineno: int, line: str) -> Union[Dict[str, Any], EDFormatError]:
    """One line of the release format (no quoting, `_comma_` escapes) as a row, or the error that says why not."""
    parts = line.split(",")
    where = f"line {lineno}"
    conv_id = parts[0].strip() or None
    n = len(RELEASE_COLUMNS)
    if len(parts) < n:
        return EDFormatError(path, where, "line",
                             f"broken CSV line: {len(parts)} comma-separated fields, expected {n} "
                             f"({','.join(RELEASE_COLUMNS)}): the line is cut before '{RELEASE_COLUMNS[len(parts)]}'",
                             conv_id=conv_id)
    if (len(parts) == n + 1 and parts[4].strip().isdigit() and not parts[6].strip()
            and (not parts[8].strip() or _SELFEVAL.match(parts[7].strip()) and parts[7].strip())):
        # the utterance ends with a comma its writer did not escape: the empty field after the utterance is that
        # comma's, and selfeval/tags follow it (a genuine 9th column holds label candidates after the selfeval)
        parts = parts[:5] + [parts[5] + ","] + parts[7:]
    shifted = not parts[4].strip().isdigit() or not _SELFEVAL.match(parts[6].strip())
    if len(parts) > n + 1 or (len(parts) == n + 1 and shifted):
        field = "prompt" if not parts[4].strip().isdigit() else "utterance"
        return EDFormatError(path, where, field,
                             f"broken CSV line: {len(parts)} comma-separated fields for the {n} columns: the {field} "
                             f"text has a comma not written as _comma_ (the release's escape); escape it, or write "
                             f"the file with a CSV library (quoted fields)", conv_id=conv_id)
    return dict(zip(RELEASE_COLUMNS, parts[:n]))


def _iter_csv(path: str) -> Iterator[Tuple[str, Union[Dict[str, Any], EDFormatError]]]:
    with _open_text(path) as f:
        header = f.readline().rstrip("\r\n").split(",")
        peek = f.read(1 << 20)
        f.seek(0)
        f.readline()
        if header[: len(RELEASE_COLUMNS)] == RELEASE_COLUMNS and ("_comma_" in peek or '"' not in peek):
            # The release's own writer: no quoting, commas in text are `_comma_`; split as ParlAI does.
            # (A quoted CSV, written by a CSV library, has no `_comma_` and quotes fields with commas.)
            for lineno, line in enumerate(f, start=2):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield f"line {lineno}", _release_row(path, lineno, line)
            return
        f.seek(0)
        reader = csv.DictReader(f, strict=True)
        try:
            for row in reader:
                where = f"line {reader.line_num}"
                if None in row:  # more values than header columns
                    yield where, EDFormatError(
                        path, where, "line",
                        f"broken CSV line: {len(reader.fieldnames) + len(row[None])} values for "
                        f"{len(reader.fieldnames)} header columns (a text with an unquoted comma?)",
                        conv_id=(row.get("conv_id") or "").strip() or None,
                    )
                    continue
                missing = [name for name in reader.fieldnames if row.get(name) is None]
                if missing:
                    yield where, EDFormatError(
                        path, where, "line",
                        f"broken CSV line: {len(reader.fieldnames) - len(missing)} of {len(reader.fieldnames)} "
                        f"values; the line is cut before '{missing[0]}'",
                        conv_id=(row.get("conv_id") or "").strip() or None,
                    )
                    continue
                yield where, row
        except csv.Error as e:
            yield f"line {reader.line_num}", EDFormatError(path, f"line {reader.line_num}", "line",
                                                           f"broken CSV line: {e} (a quoted field is not closed)")


def _iter_jsonl(path: str) -> Iterator[Tuple[str, Union[Dict[str, Any], EDFormatError]]]:
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                # a broken line drops its whole conversation when its conv_id can still be read
                found = re.search(r'"conv_id"\s*:\s*"((?:[^"\\]|\\.)*)"', line)
                yield f"line {lineno}", EDFormatError(path, f"line {lineno}", "line", f"invalid JSON: {e.msg}",
                                                      conv_id=found.group(1) if found else None)
                continue
            if not isinstance(row, dict):
                yield f"line {lineno}", EDFormatError(path, f"line {lineno}", "line", "expected a JSON object")
                continue
            yield f"line {lineno}", row


def _iter_dataset_rows(rows: Iterable[Mapping[str, Any]]) -> Iterator[Tuple[str, Dict[str, Any]]]:
    for i, row in enumerate(rows):
        yield f"row {i}", dict(row)


def _first_undecodable_line(path: str) -> Tuple[int, str]:
    """(line number, error) of the first line of `path` that is not UTF-8."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return lineno, f"byte {raw[e.start:e.start + 1]!r} at column {e.start + 1}"
    return 0, "unknown position"


def _iter_file(path: str) -> Iterator[Tuple[str, Union[Dict[str, Any], EDFormatError]]]:
    try:
        yield from _iter_file_unchecked(path)
    except UnicodeDecodeError:
        lineno, what = _first_undecodable_line(path)
        raise EDFormatError(path, f"line {lineno}", "encoding", f"not UTF-8 text ({what})",
                            hint="Convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8); a file that cannot be "
                                 "decoded is not read at all, so skipping invalid conversations does not apply") from None


def _iter_file_unchecked(path: str) -> Iterator[Tuple[str, Union[Dict[str, Any], EDFormatError]]]:
    name = path.lower()
    if name.endswith((".csv", ".csv.gz")):
        return _iter_csv(path)
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        return _iter_jsonl(path)
    if name.endswith(".parquet"):
        return _iter_dataset_rows(Dataset.from_parquet(path, keep_in_memory=True))
    raise ValueError(f"{path}: unsupported file type; expected one of {', '.join(DATA_EXTENSIONS)}")


# ----------------------------------------------------------------------------------------------------------
# Rows -> conversations
# ----------------------------------------------------------------------------------------------------------


def _first(row: Mapping[str, Any], names: Tuple[str, ...]) -> Tuple[str, Any]:
    """Return (field name, value) of the first of `names` present in `row` (value None if none is)."""
    for name in names:
        if name in row and row[name] is not None:
            return name, row[name]
    return names[0], None


def _text_field(row: Mapping[str, Any], names: Tuple[str, ...], source: str, location: str) -> str:
    name, value = _first(row, names)
    if value is None:
        raise EDFormatError(source, location, name, "missing")
    if not isinstance(value, str):
        raise EDFormatError(source, location, name, f"expected text, got {type(value).__name__}")
    text = clean_release_text(value)
    if not text:
        raise EDFormatError(source, location, name, "empty text")
    return text


def _emotion_field(row: Mapping[str, Any], source: str, location: str) -> str:
    name, value = _first(row, ("emotion", "context"))
    if value is None:
        raise EDFormatError(source, location, "emotion", "missing (expected a column 'emotion' or 'context')")
    label = str(value).strip().lower()
    if label not in EMOTION_TO_ID:
        raise EDFormatError(source, location, name, f"unknown emotion {value!r}; expected one of the 32 ED labels")
    return label


def _check_speaker(value: Any, idx: int, source: str, location: str) -> None:
    """A `speaker` field, when present, must be the role that `utterance_idx` implies (odd: speaker)."""
    if value is None:
        return
    expected = SPEAKER if idx % 2 == 1 else LISTENER
    if str(value).strip().lower() != expected:
        raise EDFormatError(source, location, "speaker",
                            f"{value!r} but utterance_idx {idx} is the {expected}'s turn (odd: speaker, even: listener)")


def _utterance_idx(value: Any, source: str, location: str) -> int:
    try:
        idx = int(value)
    except (TypeError, ValueError):
        raise EDFormatError(source, location, "utterance_idx", f"expected an integer, got {value!r}") from None
    if idx < 1:
        raise EDFormatError(source, location, "utterance_idx", f"must be >= 1, got {idx}")
    return idx


class _Builder:
    """Accumulates rows of one split into conversations, keeping file order."""

    def __init__(self, source: str):
        self.source = source
        self.conversations: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()
        self.errors: "OrderedDict[str, EDFormatError]" = OrderedDict()  # conv_id (or location) -> first error

    def add(self, location: str, row: Union[Dict[str, Any], EDFormatError]) -> None:
        if isinstance(row, EDFormatError):
            # a broken line whose conversation is known drops that conversation (never a silent missing turn)
            self.errors.setdefault(row.conv_id or f"<{location}>", row)
            return
        conv_id = row.get("conv_id")
        if conv_id is None or str(conv_id).strip() == "":
            self.errors.setdefault(f"<{location}>", EDFormatError(self.source, location, "conv_id", "missing"))
            return
        conv_id = str(conv_id).strip()
        try:
            if "turns" in row or "utterances" in row:
                self._add_conversation(conv_id, location, row)
            else:
                self._add_utterance(conv_id, location, row)
        except EDFormatError as e:
            self.errors.setdefault(conv_id, e)

    def _new(self, conv_id: str, location: str, row: Mapping[str, Any]) -> Dict[str, Any]:
        return {
            "conv_id": conv_id,
            "emotion": _emotion_field(row, self.source, location),
            "situation": _text_field(row, ("situation", "prompt"), self.source, location),
            "turns": {},
            "location": location,
        }

    def _add_utterance(self, conv_id: str, location: str, row: Mapping[str, Any]) -> None:
        conv = self.conversations.get(conv_id)
        if conv is None:
            conv = self.conversations[conv_id] = self._new(conv_id, location, row)
        else:
            emotion = _emotion_field(row, self.source, location)
            if emotion != conv["emotion"]:
                raise EDFormatError(self.source, location, _first(row, ("emotion", "context"))[0],
                                    f"emotion {emotion!r} differs from {conv['emotion']!r} given for {conv_id} at "
                                    f"{conv['location']}; a conversation has one emotion")
        idx = _utterance_idx(_first(row, ("utterance_idx",))[1], self.source, location)
        _check_speaker(row.get("speaker"), idx, self.source, location)
        if idx in conv["turns"]:
            raise EDFormatError(self.source, location, "utterance_idx", f"duplicate utterance_idx {idx} in {conv_id}")
        conv["turns"][idx] = _text_field(row, ("utterance", "text"), self.source, location)

    def _add_conversation(self, conv_id: str, location: str, row: Mapping[str, Any]) -> None:
        if conv_id in self.conversations:
            raise EDFormatError(self.source, location, "conv_id", f"duplicate conversation {conv_id}")
        conv = self._new(conv_id, location, row)
        turns = row.get("turns", row.get("utterances"))
        if not isinstance(turns, (list, tuple)) or not turns:
            raise EDFormatError(self.source, location, "turns", "expected a non-empty list of utterances")
        for k, turn in enumerate(turns):
            where = f"{location} (turn {k})"
            if isinstance(turn, str):
                idx, text = k + 1, _text_field({"text": turn}, ("text",), self.source, where)
            elif isinstance(turn, Mapping):
                idx = _utterance_idx(turn.get("utterance_idx", k + 1), self.source, where)
                _check_speaker(turn.get("speaker"), idx, self.source, where)
                text = _text_field(turn, ("text", "utterance"), self.source, where)
            else:
                raise EDFormatError(self.source, where, "turns", f"expected text or an object, got {type(turn).__name__}")
            if idx in conv["turns"]:
                raise EDFormatError(self.source, where, "utterance_idx", f"duplicate utterance_idx {idx}")
            conv["turns"][idx] = text
        self.conversations[conv_id] = conv

    def _check_numbering(self) -> None:
        for conv_id, conv in self.conversations.items():
            indices = sorted(conv["turns"])
            if conv_id not in self.errors and indices != list(range(1, len(indices) + 1)):
                missing = sorted(set(range(1, indices[-1] + 1)) - set(indices))
                self.errors[conv_id] = EDFormatError(
                    self.source, conv["location"], "utterance_idx",
                    f"conversation {conv_id} lacks utterance_idx {missing}: a turn is missing", conv_id=conv_id)

    def finish(self, split: str, skip_invalid: bool, report: SkipReport) -> List[Dict[str, Any]]:
        self._check_numbering()
        if self.errors and not skip_invalid:
            raise next(iter(self.errors.values()))
        for error in self.errors.values():
            report.add(split, error)
        out = []
        for conv_id, conv in self.conversations.items():
            if conv_id in self.errors:
                continue
            indices = sorted(conv["turns"])
            out.append(
                {
                    "conv_id": conv_id,
                    "emotion": conv["emotion"],
                    "situation": conv["situation"],
                    "utterances": [conv["turns"][i] for i in indices],
                    # odd utterance_idx: the speaker (who wrote the situation); even: the listener
                    "speakers": [SPEAKER if i % 2 == 1 else LISTENER for i in indices],
                }
            )
        if not out:
            if self.errors:
                first = next(iter(self.errors.values()))
                raise EDFormatError(self.source, "every row", "conv_id",
                                    f"all {len(self.errors)} conversation(s) are invalid, none is left (skip_invalid "
                                    f"dropped them all); first error: {first.source}, {first.location}, field "
                                    f"'{first.field}': {first.reason}", hint="Fix the file")
            raise EDFormatError(self.source, "whole file", "conv_id",
                                "no conversation in the file (empty, or only a header line)",
                                hint="Check that it is the file you meant")
        return out


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


def _canonical_split(name: str) -> str:
    return SPLIT_ALIASES.get(name, name)


def _split_of_file(path: str) -> str:
    base = os.path.basename(path)
    for ext in DATA_EXTENSIONS:
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
            break
    # Hub-style parquet shards: "train-00000-of-00001"; case does not name another split (Train.csv is train)
    return _canonical_split(base.split("-")[0].lower())


def find_split_files(directory: str) -> Dict[str, List[str]]:
    """Map split names to the data files of a directory (`train.csv`, `valid.jsonl.gz`, ...).

    Files directly in `directory` are used; if there are none, those of its `data/` folder (the layout of
    parquet copies on the Hub: `data/train-00000-of-00001.parquet`). Other sub-folders are ignored.
    """
    for folder in (directory, os.path.join(directory, "data")):
        if not os.path.isdir(folder):
            continue
        found: Dict[str, List[str]] = {}
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and name.lower().endswith(DATA_EXTENSIONS):
                found.setdefault(_split_of_file(path), []).append(path)
        if found:
            for split, paths in found.items():
                names = [os.path.basename(p) for p in paths]
                if len(paths) > 1 and not all(_SHARD.match(n) for n in names):
                    raise ValueError(
                        f"{folder}: split '{split}' has several files ({', '.join(names)}): they would be read "
                        f"together and repeat or mix conversations; keep one (or shards named "
                        f"'{split}-00000-of-0000N.<ext>'), or pass the file with --train_file/--validation_file"
                    )
            return found
    raise FileNotFoundError(
        f"{directory}: no EmpatheticDialogues files ({', '.join(DATA_EXTENSIONS)}) found in it or in its data/ folder"
    )


def read_conversations(
    files: Union[str, List[str]], split: str = "train", skip_invalid: bool = False, report: Optional[SkipReport] = None
) -> List[Dict[str, Any]]:
    """Read the conversations of one split from one or more files (any supported form)."""
    files = [files] if isinstance(files, str) else list(files)
    report = report if report is not None else SkipReport()
    conversations: List[Dict[str, Any]] = []
    for path in files:
        builder = _Builder(path)
        for location, row in _iter_file(path):
            builder.add(location, row)
        conversations += builder.finish(split, skip_invalid, report)
    return conversations


def _conversations_from_rows(rows: Iterable[Mapping[str, Any]], source: str, split: str, skip_invalid: bool,
                             report: SkipReport) -> List[Dict[str, Any]]:
    builder = _Builder(source)
    for location, row in _iter_dataset_rows(rows):
        builder.add(location, row)
    return builder.finish(split, skip_invalid, report)


def load_empathetic_dialogues(
    source: Union[str, Mapping[str, Union[str, List[str]]]],
    splits: Optional[List[str]] = None,
    skip_invalid: bool = False,
    return_report: bool = False,
    **hub_kwargs: Any,
) -> Union[DatasetDict, Tuple[DatasetDict, SkipReport]]:
    """Load EmpatheticDialogues as a `DatasetDict` of conversations.

    Args:
        source: a directory holding split files (`train.csv`, `valid.jsonl.gz`, `test.parquet`, Hub-style
            `data/train-*.parquet`, ...), a single file (its split is read from the name), a mapping
            `{split: file or [files]}`, or a Hub dataset id (read with `datasets.load_dataset`).
        splits: keep only these splits (after renaming `validation`/`dev` to `valid`).
        skip_invalid: drop conversations with invalid records instead of raising :class:`EDFormatError`;
            the drops are counted in a :class:`SkipReport` and logged.
        return_report: also return the :class:`SkipReport`.
        hub_kwargs: passed to `datasets.load_dataset` for a Hub id (`revision`, `token`, ...).

    Returns:
        `DatasetDict` with columns `conv_id, emotion, situation, utterances, speakers` (and the report if asked).
    """
    report = SkipReport()
    raw: Dict[str, List[Dict[str, Any]]] = {}
    if isinstance(source, Mapping):
        for split, files in source.items():
            raw[_canonical_split(split)] = read_conversations(files, _canonical_split(split), skip_invalid, report)
    elif os.path.isdir(source):
        for split, files in find_split_files(source).items():
            raw[split] = read_conversations(files, split, skip_invalid, report)
    elif os.path.isfile(source):
        split = _split_of_file(source)
        raw[split] = read_conversations(source, split, skip_invalid, report)
    else:
        logger.info("%s is not a local path: loading it from the Hugging Face Hub", source)
        hub = datasets.load_dataset(source, **hub_kwargs)
        for split, rows in hub.items():
            raw[_canonical_split(split)] = _conversations_from_rows(
                rows, f"{source} [{split}]", _canonical_split(split), skip_invalid, report
            )
    if splits is not None:
        missing = [s for s in map(_canonical_split, splits) if s not in raw]
        if missing:
            raise ValueError(f"{source}: split(s) {missing} not found; available: {sorted(raw)}")
        raw = {s: raw[s] for s in map(_canonical_split, splits)}
    if report.total:
        logger.warning("%s: %s", source, report)
    result = DatasetDict(
        {split: Dataset.from_list(convs, features=CONVERSATION_FEATURES) for split, convs in raw.items()}
    )
    return (result, report) if return_report else result


def _samples_of_batch(batch: Dict[str, List[Any]]) -> Dict[str, List[Any]]:
    out: Dict[str, List[Any]] = {name: [] for name in SAMPLE_FEATURES}
    for conv_id, emotion, situation, utterances, speakers in zip(
        batch["conv_id"], batch["emotion"], batch["situation"], batch["utterances"], batch["speakers"]
    ):
        for t in range(1, len(utterances)):
            if speakers[t] != LISTENER:
                continue
            out["conv_id"].append(conv_id)
            out["turn"].append(t)
            out["emotion"].append(emotion)
            out["emotion_id"].append(EMOTION_TO_ID[emotion])
            out["situation"].append(situation)
            out["context"].append(utterances[:t])
            out["context_roles"].append(speakers[:t])
            out["target"].append(utterances[t])
    return out


def build_samples(conversations: Union[Dataset, DatasetDict], num_proc: Optional[int] = None) -> Union[Dataset, DatasetDict]:
    """One sample per listener turn: context = every earlier utterance (with roles), target = that turn.

    Columns: `conv_id, turn` (index of the target in the conversation), `emotion, emotion_id` (the authors' id
    order, :data:`EMOTION_LABELS`), `situation, context, context_roles, target`.
    """
    return conversations.map(
        _samples_of_batch,
        batched=True,
        remove_columns=list(CONVERSATION_FEATURES),
        features=SAMPLE_FEATURES,
        num_proc=num_proc,
        desc="Building listener-turn samples",
    )


def describe(dataset: DatasetDict) -> Dict[str, int]:
    """Row counts per split (conversations or samples, whichever `dataset` holds)."""
    return {split: ds.num_rows for split, ds in dataset.items()}
