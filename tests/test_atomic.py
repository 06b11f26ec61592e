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


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    """SIGKILL skips every `finally`: the killed process's temporary stays, hidden, until the next
    writer of that output removes it. A live writer's temporary is left alone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    dest = tmp_path / "out"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from w4rl_core.atomic import atomic_path\n"
        f"with atomic_path({str(dest)!r}) as tmp:\n"
        "    tmp.mkdir(); (tmp / 'half.bin').write_bytes(b'x' * 1000); print('ready', flush=True); time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": os.getcwd()})
    try:
        assert writer.stdout.readline().strip() == "ready"
        (live,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
        write_json_atomic(tmp_path / "other.json", {})  # another output's write leaves it alone
        with atomic_path(dest) as tmp:  # so does this one: its writer is alive
            tmp.write_text("first")
        assert live.exists()
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
        assert live.exists() and not dest.is_dir()  # the output is the last complete write
        time.sleep(0.1)
        with atomic_path(dest) as tmp:
            tmp.write_text("second")
        assert not live.exists() and dest.read_text() == "second"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json", "out"]
    finally:
        writer.kill()
