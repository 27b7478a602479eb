"""The JSONL files that long runs append one finished record to at a time (`memwall run`, `validate`, `microbench`,
`sweep`, the host probes beside a grid) and read back to resume, or to report.

A kill mid-write leaves at most one partial line, at the end, without its newline. Before appending again,
`prepare_append` cuts that line off (a record cut short is not a record: its point runs again), or gives it the
newline it lacks when it is a whole record; appending onto it instead would glue the next record to it and lose
both. Readers skip such an unterminated last line when it does not parse; a bad line anywhere else is named (file
and line) instead of being skipped, since skipping it silently would drop a measurement from a report or a fit.

One writer per file: a second process preparing the file while the first is part-way through a record could cut
that record (each record is one write() call, so the window is small, but nothing locks it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from sim.errors import UserError


def prepare_append(path: Path, option: str = "--out") -> None:
    """Make `path` ready to take records before anything is measured: not a folder, its folder created, and a
    partial last line repaired (see the module's note). Problems are one sentence naming `option`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option}: {path} is a folder; give the path of a JSONL file to append records to")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        open(path, "ab").close()  # can it be written at all? (before a measurement, not after one)
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        tail = data[end:]
        if not tail.strip():
            return
        with open(path, "r+b") as f:
            if _parses(tail):
                f.seek(0, 2)
                f.write(b"\n")
            else:
                f.truncate(end)
    except OSError as e:
        raise UserError(f"{option}: cannot write records to {path}: {e.strerror}") from None


def _parses(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def append_record(path: Path, record: dict) -> None:
    """Append one record as one line, flushed, so that a kill loses at most the record being written."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def iter_records(path: Path, what: str, resumes: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, record) for every JSON object line of `path`; `what` names the records in messages (e.g.
    'microbenchmark records'), `resumes` says whether the caller measures again what the file lacks (the hint then
    says that deleting a bad line costs only a rerun of its point). Blank lines and an unterminated last line that
    does not parse are skipped; any other line that is not a JSON object is one sentence naming the file and line."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    lines = data.split(b"\n")  # the last element is what follows the last newline: b"" or a partial line
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
            rec = None
        if isinstance(rec, dict):
            yield n, rec
        elif n == len(lines):  # unterminated: the partial write of an interrupted run
            continue
        else:
            fix = ("delete that line: its point will run again" if resumes else
                   "repair or delete that line; deleted, its measurement is gone from what reads this file")
            raise UserError(f"{path}:{n}: not a JSON record; expected {what}, one per line ({fix})")
