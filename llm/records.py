"""Append-only JSONL files with a header line: the resumable caches and result files of `iamm.llm`.

The first line of such a file is `{"__header__": {...}}`, the settings that produced the records; every other line
is one finished record, written and `fsync`ed as soon as it is complete, so a killed job loses at most the line it
was writing (an unfinished last line is ignored and cut off before appending). Re-opening a file with other
settings is refused (see :func:`open_records`): records of two different runs are never mixed.
"""

import json
import os
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from modeling_iamm.evaluation import read_records

HEADER_KEY = "__header__"


def read_jsonl(path: str) -> Tuple[Optional[Dict[str, Any]], List[Dict[str, Any]]]:
    """The header (or None) and the complete records of a JSONL file; `(None, [])` if it does not exist."""
    records = read_records(path)
    if records and HEADER_KEY in records[0]:
        return records[0][HEADER_KEY], records[1:]
    return None, records


class RecordWriter:
    """Appends JSON records to a file, one line each, flushed and fsynced per record; safe across threads."""

    def __init__(self, path: str):
        self.path = path
        if os.path.exists(path):  # drop an unfinished last line (a killed writer) before appending
            with open(path, "rb+") as f:
                data = f.read()
                f.truncate(data.rfind(b"\n") + 1)
        self._file = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: Dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_records(path: str, header: Dict[str, Any], compare: Sequence[str], overwrite: bool = False,
                 what: str = "records", overwrite_hint: str = "--overwrite_output true"
                 ) -> Tuple[List[Dict[str, Any]], RecordWriter]:
    """Open `path` to continue it: returns its records so far and a writer that appends to it.

    A new file gets `header` as its first line. An existing one must have been written with the same values of the
    `compare` keys of its header; otherwise a `ValueError` names the keys that differ and what to do. With
    `overwrite=True` an existing file is removed first.
    """
    if overwrite and os.path.exists(path):
        os.remove(path)
    old_header, records = read_jsonl(path)
    if old_header is not None or records:  # (a file without one complete line is started afresh)
        if old_header is None:
            raise ValueError(f"{path}: not a file of {what} written by iamm.llm (its first line has no "
                             f"{HEADER_KEY!r}); move it away or pass {overwrite_hint}")
        differ = [k for k in compare if old_header.get(k) != header.get(k)]
        if differ:
            details = "; ".join(f"{k}: file has {old_header.get(k)!r}, this run {header.get(k)!r}" for k in differ)
            raise ValueError(f"{path} holds {what} made with other settings ({details}). Use another output "
                             f"location, or pass {overwrite_hint} to discard them and start over")
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps({HEADER_KEY: header}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
    return records, RecordWriter(path)
