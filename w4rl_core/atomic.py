"""Outputs appear whole or not at all.

Every stage writes into a temporary sibling and renames it into place at the end, so a killed run
never leaves a half-written output that DVC could cache or a later stage could read. A rename is
atomic within one filesystem, which is why the temporary lives next to its destination.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def tmp_sibling(path: Path) -> Path:
    # Host and pid in the name say whose it is: a later run removes the ones of dead writers.
    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_debris(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries a killed writer of ``path`` left beside it (hidden siblings that were
    never renamed into place: never an output, but disk a nightly job would otherwise leak).

    Only those of this host whose process is gone: a writer running now, or one on another machine
    sharing the filesystem, keeps its temporary.
    """
    dest = Path(path)
    pattern = re.compile(rf"^\.{re.escape(dest.name)}\.tmp-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{{8}}$")
    removed = []
    if not dest.parent.is_dir():
        return removed
    for sibling in dest.parent.iterdir():
        m = pattern.match(sibling.name)
        if m and m["host"] == socket.gethostname() and not _alive(int(m["pid"])):
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)
            removed.append(sibling)
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write a file or directory into; move it to ``path`` on success.

    An existing ``path`` is replaced only after the new output is complete. On any exception
    (including KeyboardInterrupt) the temporary is removed and ``path`` is left untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_debris(dest)
    tmp = tmp_sibling(dest)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary path for {dest}")
        if dest.is_dir() and not dest.is_symlink():
            # Directories cannot be renamed over a non-empty one: move the old one aside first.
            old = tmp_sibling(dest)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
