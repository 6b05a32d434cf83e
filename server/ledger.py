"""The privacy ledger: one line per client per round, appended, flushed and fsynced.

JSON lines, because an append is then a single write that either lands whole or leaves a torn
last line, which `read_ledger` skips: a crash can cost the entry being written, never the ones
before it. Nothing is ever rewritten or deleted.

A server killed mid-round may have ledgered some of that round's replies; resuming from the last
checkpoint runs the round again. So a resumed run first appends a marker, and `read_ledger`
drops the entries the marker supersedes (rounds after the checkpoint, written before it): each
client and round is then counted once. Nothing is lost either: every spend a client made is in
its own accountant history, which each entry carries whole (the superseded attempt included).
"""

from __future__ import annotations

import json
import os
import time
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


def mark_resume(run_dir: Path, from_round: int) -> None:
    """Record that the run continues after checkpoint `from_round`."""
    append(run_dir, [{"event": "resume", "round": from_round, "time": time.time()}])


def read_ledger(run_dir: Path, superseded: bool = False) -> list[dict]:
    """Every client's entry per round, superseded attempts of resumed rounds left out unless
    `superseded` (the report needs them: a client that trained in a round later redone has spent
    that budget, whether or not it is sampled again)."""
    path = run_dir / LEDGER
    if not path.exists():
        return []
    entries: list[dict] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the torn last line of a crash mid-append
        if entry.get("event") == "resume":
            if not superseded:
                entries = [e for e in entries if e["round"] <= entry["round"]]
        else:
            entries.append(entry)
    return entries
