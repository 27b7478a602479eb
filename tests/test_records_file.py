"""The JSONL records files that runs append to and resume from (validation/records_file.py): a kill's partial last
line is repaired before the next append, and a bad line elsewhere is named rather than skipped."""

import json
from pathlib import Path

import pytest

from sim.errors import UserError
from validation.records_file import append_record, iter_records, prepare_append

A, B = {"key": "a", "status": "ok"}, {"key": "b", "status": "ok"}


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_partial_last_line_is_cut_off_before_the_next_append(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps(A) + "\n" + '{"key": "b", "sta')  # a kill in the middle of a write
    assert [r for _, r in iter_records(f, "records")] == [A]  # readers skip it
    prepare_append(f)
    append_record(f, B)
    assert _lines(f) == [A, B]


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps(A))
    prepare_append(f)
    append_record(f, B)
    assert _lines(f) == [A, B]


def test_prepare_creates_the_folder_and_refuses_a_folder(tmp_path):
    f = tmp_path / "new" / "deeper" / "r.jsonl"
    prepare_append(f)
    assert f.parent.is_dir() and f.read_bytes() == b""  # opened for appending once: it can be written
    with pytest.raises(UserError, match=r"^--out: .* is a folder; give the path of a JSONL file"):
        prepare_append(tmp_path)


@pytest.mark.parametrize("bad", [b"{garbage", b"[1, 2]", b"\xff\xfe not utf-8"])
def test_a_bad_line_before_the_last_is_named(tmp_path, bad):
    f = tmp_path / "r.jsonl"
    f.write_bytes(json.dumps(A).encode() + b"\n" + bad + b"\n" + json.dumps(B).encode() + b"\n")
    with pytest.raises(UserError, match=r"r\.jsonl:2: not a JSON record; expected runs, one per line"):
        list(iter_records(f, "runs"))


def test_a_terminated_bad_last_line_is_named_too(tmp_path):
    """Only an unterminated line can be a kill's partial write; a bad line with its newline is not one."""
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps(A) + "\n{garbage\n")
    with pytest.raises(UserError, match=r"r\.jsonl:2:"):
        list(iter_records(f, "runs"))


def test_a_corrupt_run_record_stops_the_report_with_its_line(tmp_path):
    from validation.validation_report import read_folder

    f = tmp_path / "validation-runs.jsonl"
    f.write_text(json.dumps({"key": "k", "status": "ok", "scenario": {}}) + "\n{garbage\n"
                 + json.dumps({"key": "j", "status": "ok", "scenario": {}}) + "\n")
    with pytest.raises(UserError, match=r"validation-runs\.jsonl:2: not a JSON record"):
        read_folder(tmp_path)


def test_an_unwritable_file_is_told_before_any_measurement():
    """/proc takes no new files, even from root: the file is opened once when prepared, not first after a point was
    measured (when the measurement would be lost)."""
    import os

    if not os.path.isdir("/proc"):
        pytest.skip("needs Linux's /proc")
    with pytest.raises(UserError, match=r"^--out: cannot write records to /proc/memwall-test\.jsonl"):
        prepare_append(Path("/proc/memwall-test.jsonl"))


def test_the_hint_says_what_deleting_a_bad_line_costs(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text("{bad\n" + json.dumps(A) + "\n")
    with pytest.raises(UserError, match="its point will run again"):
        list(iter_records(f, "runs", resumes=True))
    with pytest.raises(UserError, match="deleted, its measurement is gone from what reads this file"):
        list(iter_records(f, "runs"))
