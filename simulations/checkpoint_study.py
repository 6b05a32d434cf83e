"""What the validation-only studies of one checkpoint share (cooccurrence, transition_prior,
popularity_prior): check `--checkpoint`, run the study, and write its record, JSON for machines
and Markdown for people, with the provenance taken when the study started.

A bad checkpoint or input is one line on stderr, exit 2, and nothing written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shared.atomic import write_json, write_text
from shared.errors import FedrecError
from simulations.provenance import provenance


def record_study(script: str, args: argparse.Namespace, run: Callable[[argparse.Namespace], list[dict]],
                 markdown: Callable[[dict], str], report: str | None = None, flag: str = "--checkpoint",
                 **fields: Any) -> int:  # fmt: skip
    """Run `run(args)` on `args.checkpoint` (given as `flag`), then write `args.out`/`report`
    (default: `script`) .json and .md: the provenance, the checkpoint, `fields` and the rows.
    The exit status."""
    checkpoint: Path = args.checkpoint
    if not (checkpoint / "model.safetensors").exists():
        print(f"{script}: error: {flag} {checkpoint}: no model.safetensors there", file=sys.stderr)
        return 2
    started = provenance()  # the code that runs, whatever the tree holds when it ends
    try:
        rows = run(args)
    except FedrecError as err:
        print(f"{script}: error: {err}", file=sys.stderr)
        return 2
    record = {"provenance": started, "checkpoint": str(checkpoint), **fields, "rows": rows}
    name = report or script
    write_json(args.out / f"{name}.json", record)
    write_text(args.out / f"{name}.md", markdown(record))
    print(markdown(record))
    return 0


def sample_users(users: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A seeded sample of at most `count` of `users`: the same users for every row of a study."""
    return np.random.default_rng(seed).choice(users, min(count, len(users)), replace=False)
