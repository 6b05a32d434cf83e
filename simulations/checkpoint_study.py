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


def validation_scores(dataset, scorer, users: np.ndarray,  # type: ignore[no-untyped-def]
                      negatives: np.ndarray | None = None) -> dict[str, float]:  # fmt: skip
    """`scorer`'s validation full NDCG@10 and HR@10 and sampled HR@10 on `users` (against
    `negatives` when already drawn): the three numbers every row of a checkpoint study records."""
    from shared.eval.protocols import evaluate_full, evaluate_sampled

    full = evaluate_full(dataset, scorer, "valid", users=users)
    sampled = evaluate_sampled(dataset, scorer, "valid", candidates=negatives, users=users)
    return {"full-ndcg@10": full["ndcg@10"], "full-hr@10": full["hr@10"], "sampled-hr@10": sampled["hr@10"]}


def validation_cells(valid: dict[str, float]) -> str:
    """Those three numbers as the last cells of a Markdown row."""
    return f"{valid['full-ndcg@10']:.4f} | {valid['full-hr@10']:.4f} | {valid['sampled-hr@10']:.4f} |"
