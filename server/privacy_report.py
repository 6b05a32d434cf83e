"""`privacy_report.json` and a self-contained `privacy_report.html` from a run's ledger.

Every epsilon in the report is the one the client computed, and the report recomputes it from
the client's own history (sigma, q, steps per round) with the same accountant, and says whether
they agree; anyone can repeat that with an independent accountant.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from server.ledger import read_ledger
from shared.atomic import write_json, write_text
from shared.errors import FedrecError
from shared.privacy.accounting import epsilon

HISTORY_KEYS = ("round", "noise_multiplier", "sample_rate", "steps", "max_grad_norm", "epsilon")
MAX_LINES = 20  # more clients than this are drawn as quantile bands


def build_report(run_dir: Path) -> dict[str, Any]:
    entries = read_ledger(run_dir)
    if not entries:
        raise FedrecError(f"{run_dir}: no privacy ledger (privacy_ledger.jsonl); was the run made with dp=true?")
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
        "scope": "The guarantee covers the model updates a client sends. Aggregated evaluation "
                 "metrics (HR/NDCG counts) are released without noise and are outside it.",
        "clients": clients,
        "central": None,
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


def _png(fig) -> str:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(report: dict, metrics: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    clients = report["clients"]
    rounds = np.arange(1, report["rounds"] + 1)
    # A client's epsilon holds steady over rounds it was not sampled in.
    curves = np.array([[max([h["epsilon"] for h in c["history"] if h["round"] <= r] or [0.0])
                        for r in rounds] for c in clients])  # fmt: skip
    budget = max(c["budget"] for c in clients)
    out = {}

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if len(clients) <= MAX_LINES:
        for c, curve in zip(clients, curves):
            ax.plot(rounds, curve, marker="o", label=c["client_id"])
        ax.legend(fontsize=7, ncol=2)
    else:
        lo, mid, hi = np.percentile(curves, [5, 50, 95], axis=0)
        ax.fill_between(rounds, lo, hi, alpha=0.3, label="5th-95th percentile")
        ax.plot(rounds, mid, marker="o", label="median")
        ax.legend(fontsize=8)
    ax.axhline(budget, ls="--", c="k", lw=1)
    ax.set(xlabel="round", ylabel="epsilon", title="Epsilon over rounds (dashed: budget)")
    out["epsilon_over_rounds"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([c["epsilon"] for c in clients], bins=min(30, max(5, len(clients))))
    ax.set(xlabel="final epsilon", ylabel="clients", title="Final epsilon across clients")
    out["epsilon_distribution"] = _png(fig)

    fig, ax = plt.subplots(figsize=(5, 3))
    counts = report["status_counts"]
    ax.bar(list(counts), list(counts.values()))
    ax.set(ylabel="clients", title="Budget status")
    out["status_counts"] = _png(fig)

    history = metrics.get("history", [])
    if history:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        r = [h["round"] for h in history]
        ax.plot(r, [h["valid"].get("ranking-full-ndcg@10", np.nan) for h in history], marker="o", c="C0")
        ax.set(xlabel="round", ylabel="validation NDCG@10 (two-stage, full)", title="Utility next to epsilon")
        twin = ax.twinx()
        twin.plot(rounds, np.median(curves, axis=0), marker="s", c="C3")
        twin.set_ylabel("median epsilon", color="C3")
        out["utility_vs_epsilon"] = _png(fig)
    return out


def render_html(report: dict, figures: dict[str, str]) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(c['client_id'])}</td><td>{c['epsilon']:.4f}</td><td>{c['budget']:.2f}</td>"
        f"<td>{c['delta']:.2e}</td><td>{esc(c['status'])}</td><td>{len(c['history'])}</td>"
        f"<td>{'yes' if c['recomputation_agrees'] else 'NO'}</td></tr>"
        for c in sorted(report["clients"], key=lambda c: -c["epsilon"])[:50]
    )
    images = "".join(f'<figure><img alt="{esc(k)}" src="data:image/png;base64,{v}"></figure>'
                     for k, v in figures.items())  # fmt: skip
    q = report["epsilon_quantiles"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fedrec privacy report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}
figure{{display:inline-block;margin:0.5em}}</style></head><body>
<h1>Privacy report</h1>
<p>Accountant: <b>{esc(str(report['accountant']))}</b>. Privacy unit: <b>{esc(str(report['unit']))}</b>
({esc(report['unit_meaning'])}). delta (largest over clients): <b>{report['delta']:.2e}</b>.
Rounds: {report['rounds']}. Clients: {report['num_clients']}.</p>
<p>Final epsilon: median {q['p50']:.3f}, 95th percentile {q['p95']:.3f}, max {q['p100']:.3f}.
Budget status: {esc(json.dumps(report['status_counts']))}.
Every epsilon recomputed from its history agrees: <b>{'yes' if report['all_recomputations_agree'] else 'NO'}</b>.</p>
<p>{esc(report['scope'])}</p>
{images}
<h2>Clients (highest epsilon first{', top 50' if report['num_clients'] > 50 else ''})</h2>
<table><tr><th>client</th><th>epsilon</th><th>budget</th><th>delta</th><th>status</th><th>rounds trained</th><th>recomputed</th></tr>
{rows}</table></body></html>
"""


def write_report(run_dir: Path, out_dir: Path | None = None) -> dict[str, Any]:
    """Writes privacy_report.json and privacy_report.html into `out_dir` (default: the run)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir or run_dir)
    if not run_dir.is_dir():
        raise FedrecError(f"{run_dir}: no such run directory")
    report = build_report(run_dir)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    write_json(out_dir / "privacy_report.json", report)
    write_text(out_dir / "privacy_report.html", render_html(report, _figures(report, metrics)))
    return report
