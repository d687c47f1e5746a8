import json
import os

import pytest

from ardet.files import JsonlWriter, atomic_write_json, read_jsonl


def test_atomic_write_leaves_only_the_final_file(tmp_path):
    atomic_write_json(tmp_path / "sub" / "r.json", {"a": 1})
    atomic_write_json(tmp_path / "sub" / "r.json", {"a": 2})
    assert os.listdir(tmp_path / "sub") == ["r.json"]
    assert json.loads((tmp_path / "sub" / "r.json").read_text()) == {"a": 2}


def test_atomic_write_gives_the_mode_open_would(tmp_path):
    old = os.umask(0o027)
    try:
        (tmp_path / "plain").write_text("x")
        atomic_write_json(tmp_path / "new.json", {})
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777 == 0o640
        os.chmod(tmp_path / "new.json", 0o604)
        atomic_write_json(tmp_path / "new.json", {"a": 1})  # a replaced file keeps its own mode
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o604
    finally:
        os.umask(old)


def test_atomic_write_refuses_nan_and_keeps_the_old_file(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"a": 1})
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "r.json", {"a": float("nan")})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def test_jsonl_survives_a_torn_last_line_and_appends_cleanly(tmp_path):
    path = tmp_path / "r.jsonl"
    with JsonlWriter(path) as w:
        w.write({"id": 1})
        w.write({"id": 2})
    with open(path, "a") as f:
        f.write('{"id": 3, "dets": [1, ')  # the process died mid-record
    assert [r["id"] for r in read_jsonl(path)] == [1, 2]
    with JsonlWriter(path) as w:
        w.write({"id": 3})
    assert [r["id"] for r in read_jsonl(path)] == [1, 2, 3]
    # Torn just before its newline: the record parses, but the next writer cuts it, so a reader must not count it.
    with open(path, "a") as f:
        f.write('{"id": 4}')
    assert [r["id"] for r in read_jsonl(path)] == [1, 2, 3]
    JsonlWriter(path).close()
    assert [r["id"] for r in read_jsonl(path)] == [1, 2, 3]


def test_jsonl_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 1}\n{oops\n{"id": 2}\n')
    with pytest.raises(ValueError, match="r.jsonl:2"):
        list(read_jsonl(path))
    assert list(read_jsonl(tmp_path / "missing.jsonl")) == []
