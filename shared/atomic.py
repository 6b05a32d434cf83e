"""Writes that never leave a half-written file or directory behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.errors import FedrecError


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `target`; it is renamed onto `target` only on success.

    Works for files and directories alike: the caller creates whichever it needs at the yielded
    path. A sibling (not /tmp) keeps the final rename on one filesystem, where it is atomic.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staged = tmp / target.name
    try:
        yield staged
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(target: Path, text: str) -> None:
    """Written, flushed to disk, then renamed: after a crash the old or the new file is there."""
    with atomic_path(Path(target)) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(target: Path, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_writable(directory: Path, what: str) -> None:
    """Refuse, before any work, a directory that cannot be created or written to: a run should
    not train for an hour and then fail on its first checkpoint."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".fedrec-write-check-"):
            pass
    except OSError as err:
        raise FedrecError(f"{what} {directory} is not writable: {err.strerror or err}") from None
