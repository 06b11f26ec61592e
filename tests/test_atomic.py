"""Outputs appear whole or not at all."""

import pytest

from w4rl_core.atomic import atomic_path, write_json_atomic


def test_failed_write_leaves_destination_untouched(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(dest) as tmp:
            tmp.mkdir()
            (tmp / "half.txt").write_text("half")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (dest / "old.txt").read_text() == "old"


def test_successful_write_replaces_directory_and_file(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in dest.iterdir()] == ["new.txt"]
    write_json_atomic(tmp_path / "m.json", {"a": 1})
    write_json_atomic(tmp_path / "m.json", {"a": 2})
    assert (tmp_path / "m.json").read_text().strip().endswith("}") and '"a": 2' in (tmp_path / "m.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "out"]


def test_nothing_written_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "x"):
            pass
