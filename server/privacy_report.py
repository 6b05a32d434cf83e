"""`privacy_report.json` and a self-contained `privacy_report.html` from a run's ledger.

Every epsilon in the report is computed here, from the history each client recorded (sigma, q
and executed steps per round, and its delta), with Google's `dp_accounting` under the relation it
names (replace-one). The epsilon a node reports about itself is never used: a node that misreports
it changes nothing in the report. The history is in the report, so anyone can recompute it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from server.ledger import read_ledger
from server.privacy import REFUSED
from server.privacy_html import figures, render_html
from shared.atomic import write_json, write_text
from shared.errors import FedrecError
from shared.privacy.accounting import (ACCOUNTANT, EXAMPLE, NEIGHBOURING_RELATION, SAMPLING, USER,
                                       accountant_version, central_epsilon, epsilon)

# What the report takes from a node's history; the node's own epsilon per round is not among them.
HISTORY_KEYS = ("round", "noise_multiplier", "sample_rate", "steps", "max_grad_norm")
# What evaluation releases, and what no epsilon here covers: said once, in every report.
SCOPE = ("The guarantee covers the model updates a node sends (DP-SGD's output), against a curious "
         "server, other nodes and whoever reads the final model, with the noise and the Poisson "
         "sampling drawn from the operating system's secure source (no party holding the run "
         "config can replay them). It does not cover: evaluation metrics, released without noise "
         "as means over a node's users (a node with fewer users than its policy's min-eval-users "
         "sends none), which a server choosing the evaluated weights can make depend on one user's "
         "held-out items, features or training history: the floor does not prevent that, so a node "
         "that must not answer such queries refuses to evaluate; the held-out validation and test "
         "interactions (never trained on, outside the unit); a node's example count (public under "
         "replace-one adjacency, and sent as FedAvg's weight); the time a node takes to reply.")
UNIT_MEANING = {
    EXAMPLE: ("example-level: one training example, i.e. one interaction as the target with up to max-len "
              "earlier interactions as context and the user's side features. Not covered: a single "
              "interaction (it is also context in up to max-len later examples) or the user as a whole "
              "(every example carries the user's features); for those, group privacy over the examples "
              "that contain it applies, which at this epsilon is no meaningful guarantee"),
    USER: ("user-level within a silo: one user's whole training history and side features are one "
           "example. Not covered: the user's two held-out interactions (validation and test items)"),
}


def central_block(metrics: dict) -> dict[str, Any] | None:
    """DP-FedAvg's user-level epsilon across the federation, round by round, if it was on."""
    rounds = [{"round": h["round"], **h["central_dp"]} for h in metrics.get("history", []) if "central_dp" in h]
    if not rounds:
        return None
    last = rounds[-1]
    # Recomputed from the number of noised releases over the whole history, resumed runs
    # included: Flower's accountant starts again from zero in a resumed ServerApp.
    for k, r in enumerate(rounds, start=1):
        if r.get("accountant") == "rdp":  # a run recorded before the rounds kept the PLD figure
            r["flower_epsilon"], r["flower_accountant"] = r["epsilon"], "rdp"
        r["epsilon"] = central_epsilon(r["noise_multiplier"], k, r["delta"])
        r["accountant"], r["releases"] = accountant_version(), k
    return {"mechanism": "DP-FedAvg, client-side fixed clipping (Flower)", "unit": "client",
            "neighbouring_relation": "add_remove (one client)", "releases": len(rounds),
            "accountant": accountant_version(), "epsilon": last["epsilon"], "delta": last["delta"],
            "noise_multiplier": last["noise_multiplier"], "clipping_norm": last["clipping_norm"],
            "clients_per_round": last["clients_per_round"], "flower_epsilon": last.get("flower_epsilon"),
            "history": rounds}  # fmt: skip


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
        return {"neighbouring_relation": None, "accountant": None, "unit": None, "delta": None,
                "rounds": central["history"][-1]["round"], "num_clients": 0, "status_counts": {},
                "epsilon_quantiles": {}, "refusals": [], "scope": SCOPE,
                "clients": [], "central": central}  # fmt: skip
    clients = [_client(e) for e in _longest_histories(read_ledger(run_dir, superseded=True))]
    refusals = [e for e in entries if e.get("status") == REFUSED]
    units = sorted({c["unit"] for c in clients})
    statuses = [c["status"] for c in clients]
    return {
        "neighbouring_relation": NEIGHBOURING_RELATION,
        "accountant": ACCOUNTANT, "accountant_version": accountant_version(),
        "unit": units[0] if len(units) == 1 else units,
        "unit_meaning": "; ".join(UNIT_MEANING[u] for u in units),
        "delta": max(c["delta"] for c in clients) if clients else None,
        "rounds": max(e["round"] for e in entries),
        "num_clients": len(clients),
        "status_counts": {s: statuses.count(s) for s in sorted(set(statuses))},
        "epsilon_quantiles": _quantiles([c["epsilon"] for c in clients]) if clients else {},
        "refusals": [{k: e[k] for k in ("round", "node_id", "partition_id", "key", "reason")} for e in refusals],
        "scope": SCOPE,
        "clients": clients,
        "central": central,
    }  # fmt: skip


def _longest_histories(entries: list[dict]) -> list[dict]:
    """Per client, the ledger line with its longest accountant history, superseded lines included:
    a client that trained in a round that was later redone, and was not sampled again, has still
    spent that round's budget."""
    longest: dict[str, dict] = {}
    for e in entries:
        if "client_id" not in e:
            continue  # a refusal: the node trained nothing
        best = longest.get(e["client_id"])
        if best is None or len(e["history"]) >= len(best["history"]):
            longest[e["client_id"]] = e
    return [longest[c] for c in sorted(longest)]


def _client(e: dict) -> dict[str, Any]:
    """One client's block: its spend, computed from its recorded history by the accountant, and
    what its guarantee is (relation, mechanism, sampling, unit and what the unit leaves out)."""
    rounds = [{k: h[k] for k in HISTORY_KEYS} | {"executed_steps": h.get("executed_steps", h["steps"])}
              for h in e["history"]]  # fmt: skip
    steps = [(h["noise_multiplier"], h["sample_rate"], h["executed_steps"]) for h in rounds]
    # Epsilon after each round, over the history up to it: what the plot of spending over rounds
    # draws. One accountant run per round trained, as the node itself ran when it trained.
    history = [h | {"epsilon": epsilon(steps[: i + 1], e["delta"])} for i, h in enumerate(rounds)]
    return {
        "client_id": e["client_id"], "unit": e["unit"], "unit_does_not_cover": UNIT_MEANING[e["unit"]].split("Not covered: ")[1],
        "neighbouring_relation": NEIGHBOURING_RELATION, "mechanism": ("DP-SGD: per-example clipping, Gaussian noise; a round-0 entry is the popularity "
                      "prior's count release, the same Gaussian mechanism over each user's clipped item vector"),
        "sampling": SAMPLING, "accountant": accountant_version(), "delta": e["delta"],
        "epsilon": history[-1]["epsilon"] if history else 0.0,
        "budget": e["budget"], "status": e["status"], "history": history,
        "planned_noisy_steps": sum(h["steps"] for h in history),
        "executed_noisy_steps": sum(h["executed_steps"] for h in history),
    }  # fmt: skip


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
