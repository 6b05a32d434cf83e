"""`privacy_report.json` and a self-contained `privacy_report.html` from a run's ledger.

Every epsilon in the report is the one the client computed, and the report recomputes it from
the client's own history (sigma, q, steps per round) with the same accountant, and says whether
they agree; anyone can repeat that with an independent accountant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from server.ledger import read_ledger
from server.privacy_html import figures, render_html
from shared.atomic import write_json, write_text
from shared.errors import FedrecError
from shared.privacy.accounting import epsilon

HISTORY_KEYS = ("round", "noise_multiplier", "sample_rate", "steps", "max_grad_norm", "epsilon")
MAX_LINES = 20
SCOPE = ("The guarantee covers the model updates a client sends. Aggregated evaluation metrics "
         "(per-client HR/NDCG means) are released without noise and are outside it.")  # more clients than this are drawn as quantile bands


def central_block(metrics: dict) -> dict[str, Any] | None:
    """DP-FedAvg's user-level epsilon across the federation, round by round, if it was on."""
    rounds = [{"round": h["round"], **h["central_dp"]} for h in metrics.get("history", []) if "central_dp" in h]
    if not rounds:
        return None
    last = rounds[-1]
    return {"mechanism": "DP-FedAvg, client-side fixed clipping (Flower)", "unit": "client",
            "accountant": f"{last['accountant']} (Flower)", "epsilon": last["epsilon"], "delta": last["delta"],
            "noise_multiplier": last["noise_multiplier"], "clipping_norm": last["clipping_norm"],
            "clients_per_round": last["clients_per_round"], "history": rounds}  # fmt: skip


def read_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def build_report(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The report's JSON from the run's ledger and its metrics.json (for central DP)."""
    central = central_block(metrics)
    entries = read_ledger(run_dir)
    if not entries and central is None:
        raise FedrecError(f"{run_dir}: no privacy ledger (privacy_ledger.jsonl) and no central DP; "
                          "was the run made with dp=true or central-dp=true?")  # fmt: skip
    if not entries:
        return {"accountant": None, "unit": None, "delta": None, "rounds": central["history"][-1]["round"],
                "num_clients": 0, "status_counts": {}, "epsilon_quantiles": {}, "all_recomputations_agree": True,
                "scope": SCOPE, "clients": [], "central": central}  # fmt: skip
    latest: dict[str, dict] = {}
    for e in entries:
        latest[e["client_id"]] = e  # the ledger is in round order; the last entry is current
    clients = []
    for cid, e in sorted(latest.items()):
        history = [{k: h[k] for k in HISTORY_KEYS} for h in e["history"]]
        steps = [(h["noise_multiplier"], h["sample_rate"], h["steps"]) for h in history]
        recomputed = epsilon(steps, e["delta"], e["accountant"])
        clients.append({
            "client_id": cid, "unit": e["unit"], "delta": e["delta"], "epsilon": e["epsilon"],
            "budget": e["budget"], "status": e["status"], "history": history,
            "recomputed_epsilon": recomputed,
            "recomputation_agrees": bool(np.isclose(recomputed, e["epsilon"], rtol=1e-6, atol=1e-9)),
        })  # fmt: skip
    units = sorted({c["unit"] for c in clients})
    accountants = sorted({e["accountant"] for e in entries})
    statuses = [c["status"] for c in clients]
    return {
        "accountant": accountants[0] if len(accountants) == 1 else accountants,
        "unit": units[0] if len(units) == 1 else units,
        "unit_meaning": _unit_meaning(units),
        # Clients may differ (delta defaults per client); the weakest guarantee is the headline.
        "delta": max(c["delta"] for c in clients),
        "rounds": max(e["round"] for e in entries),
        "num_clients": len(clients),
        "status_counts": {s: statuses.count(s) for s in sorted(set(statuses))},
        "epsilon_quantiles": _quantiles([c["epsilon"] for c in clients]),
        "all_recomputations_agree": all(c["recomputation_agrees"] for c in clients),
        "scope": SCOPE,
        "clients": clients,
        "central": central,
    }  # fmt: skip


def _unit_meaning(units: list[str]) -> str:
    text = {
        "record": "record-level: one training example, i.e. one interaction as the target with "
                  "the items before it as context; an interaction is also context in later "
                  "examples, so its own protection follows by group privacy",
        "user": "user-level within a silo: one user's whole history is one example",
    }  # fmt: skip
    return "; ".join(text[u] for u in units)


def _quantiles(values: list[float]) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(values, q)) for q in (0, 5, 50, 95, 100)}


def write_report(run_dir: Path, out_dir: Path | None = None) -> dict[str, Any]:
    """Writes privacy_report.json and privacy_report.html into `out_dir` (default: the run)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir or run_dir)
    if not run_dir.is_dir():
        raise FedrecError(f"{run_dir}: no such run directory")
    metrics = read_metrics(run_dir)
    report = build_report(run_dir, metrics)
    write_json(out_dir / "privacy_report.json", report)
    write_text(out_dir / "privacy_report.html", render_html(report, figures(report, metrics)))
    return report
