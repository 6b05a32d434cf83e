"""The privacy ledger: one line per client per round, appended, flushed and fsynced.

JSON lines, because an append is then a single write that either lands whole or leaves a torn
last line, which `read_ledger` skips: a crash can cost the entry being written, never the ones
before it. Nothing is ever rewritten or deleted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

LEDGER = "privacy_ledger.jsonl"


def append(run_dir: Path, entries: Iterable[dict]) -> None:
    lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
    if not lines:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LEDGER, "a", encoding="utf-8") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())


def read_ledger(run_dir: Path) -> list[dict]:
    path = run_dir / LEDGER
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the torn last line of a crash mid-append
    return entries
