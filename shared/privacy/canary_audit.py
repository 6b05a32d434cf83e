"""The canary audit of a federated run: a 95% lower bound on epsilon, beside the reported one.

A run made with `audit-canaries=m` trained each of m canary users (shared/privacy/canaries.py)
with probability 1/2, and a decoy in its place otherwise. Its final global model scores every
canary; the auditor guesses that the best-scored ones were trained on and the worst-scored ones
were not, and the number of right guesses becomes an epsilon lower bound
(shared/privacy/one_run.py; Steinke, Nasr and Jagielski, NeurIPS 2023). A bound above the reported epsilon would refute the privacy claim; a bound well
above 1 on a non-private run shows the audit can see memorisation at all.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from shared.errors import FedrecError
from shared.models.checkpoint import load_checkpoint
from shared.privacy.canaries import canary_scores, recorded_canaries
from shared.privacy.one_run import CONFIDENCE, audit_guesses, rules_json


def final_checkpoint(run_dir: Path) -> Path:
    """The run's last round checkpoint: the model it released."""
    rounds = sorted(p for p in run_dir.glob("round-*") if re.fullmatch(r"round-\d+", p.name) and p.is_dir())
    if not rounds:
        raise FedrecError(f"{run_dir}: no round-NNN checkpoint; did the run finish a round?")
    return rounds[-1]


def reported_privacy(run_dir: Path) -> tuple[float | None, float, str]:
    """(epsilon, delta) the run guarantees for swapping one canary for its decoy: under local DP
    the largest over clients (the weakest guarantee; the clients account under replace-one
    adjacency, which is exactly that swap). Under central DP alone (add/remove of a whole
    client) the swap changes one client's data, two add/remove steps: by group privacy
    (2 eps, (1 + e^eps) delta). (None, 0) for a run without DP. The third item says which."""
    path = run_dir / "privacy_report.json"
    if not path.exists():
        return None, 0.0, "no DP"
    report = json.loads(path.read_text())
    if report.get("num_clients"):
        return float(report["epsilon_quantiles"]["p100"]), float(report["delta"]), "local DP, max over clients"
    if report.get("central"):
        eps, delta = float(report["central"]["epsilon"]), float(report["central"]["delta"])
        return 2 * eps, min(1.0, (1 + math.exp(eps)) * delta), "central DP, twice its epsilon (group privacy)"
    return None, 0.0, "no DP"


def audit_run(run_dir: str | Path, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Score the run's canaries with its final model and bound epsilon at `confidence`, with
    the delta the run reports (0 without DP)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FedrecError(f"{run_dir}: no such run directory")
    checkpoint = final_checkpoint(run_dir)
    model = load_checkpoint(checkpoint)
    canaries = recorded_canaries(run_dir, int(model.config["num_items"]))
    if canaries.members.all() or not canaries.members.any():
        raise FedrecError(f"{run_dir}: {len(canaries)} canaries, {int(canaries.members.sum())} trained on: "
                          "the audit needs some of each (audit-canaries >= 2)")  # fmt: skip
    epsilon, delta, basis = reported_privacy(run_dir)
    scores = canary_scores(model, canaries.sequences)
    bound, rules = audit_guesses(scores, canaries.members, delta, confidence)
    return {
        "run_dir": str(run_dir), "checkpoint": str(checkpoint), "canaries": len(canaries),
        "trained_on": int(canaries.members.sum()), "confidence": confidence, "delta": delta,
        "epsilon_lower_bound": bound, "reported_epsilon": epsilon, "reported_as": basis, "guesses": rules_json(rules),
        # Not part of the bound; how far apart the two groups' scores are.
        "attack_auc": float(roc_auc_score(canaries.members, scores)),
        "mean_score_trained": float(scores[canaries.members].mean()),
        "mean_score_held_out": float(scores[~canaries.members].mean()),
        # Enough to recompute the bound with any other implementation of the theorem.
        "scores": [round(float(s), 6) for s in scores], "members": canaries.members.astype(int).tolist(),
    }  # fmt: skip
