"""The privacy officer's page: `privacy_report.json` drawn as one self-contained HTML file.

Plots are PNGs embedded as data URIs, so the file can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import numpy as np

MAX_LINES = 20  # more clients than this are drawn as quantile bands


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _client_curves(report: dict) -> tuple[np.ndarray, np.ndarray]:
    rounds = np.arange(1, report["rounds"] + 1)
    # A client's epsilon holds steady over rounds it was not sampled in.
    curves = np.array([[max([h["epsilon"] for h in c["history"] if h["round"] <= r] or [0.0])
                        for r in rounds] for c in report["clients"]])  # fmt: skip
    return rounds, curves


def figures(report: dict, metrics: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out: dict[str, str] = {}
    clients = report["clients"]
    epsilon_by_round: tuple[list, list, str] | None = None
    if clients:
        rounds, curves = _client_curves(report)
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
        ax.axhline(max(c["budget"] for c in clients), ls="--", c="k", lw=1)
        ax.set(xlabel="round", ylabel="epsilon", title="Local epsilon over rounds (dashed: budget)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        out["epsilon_over_rounds"] = _png(fig)

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist([c["epsilon"] for c in clients], bins=min(30, max(5, len(clients))))
        ax.set(xlabel="final epsilon", ylabel="clients", title="Final local epsilon across clients")
        out["epsilon_distribution"] = _png(fig)

        fig, ax = plt.subplots(figsize=(5, 3))
        counts = report["status_counts"]
        ax.bar(list(counts), list(counts.values()))
        ax.set(ylabel="clients", title="Budget status")
        out["status_counts"] = _png(fig)
        epsilon_by_round = (list(rounds), list(np.median(curves, axis=0)), "median local epsilon")
    if report["central"]:
        hist = report["central"]["history"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([h["round"] for h in hist], [h["epsilon"] for h in hist], marker="o")
        ax.set(xlabel="round", ylabel="epsilon", title="Central (DP-FedAvg) epsilon over rounds")
        out["central_epsilon"] = _png(fig)
        epsilon_by_round = epsilon_by_round or ([h["round"] for h in hist], [h["epsilon"] for h in hist],
                                                "central epsilon")  # fmt: skip
    history = metrics.get("history", [])
    if history and epsilon_by_round:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([h["round"] for h in history], [h["valid"].get("ranking-full-ndcg@10", np.nan) for h in history],
                marker="o", c="C0")  # fmt: skip
        ax.set(xlabel="round", ylabel="validation NDCG@10 (two-stage, full)", title="Utility next to epsilon")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        twin = ax.twinx()
        twin.plot(epsilon_by_round[0], epsilon_by_round[1], marker="s", c="C3")
        twin.set_ylabel(epsilon_by_round[2], color="C3")
        out["utility_vs_epsilon"] = _png(fig)
    return out


def _local_section(report: dict) -> str:
    if not report["clients"]:
        return "<p>Local DP-SGD was off (dp=false).</p>"
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(c['client_id'])}</td><td>{c['epsilon']:.4f}</td><td>{c['budget']:.2f}</td>"
        f"<td>{c['delta']:.2e}</td><td>{esc(c['status'])}</td><td>{len(c['history'])}</td></tr>"
        for c in sorted(report["clients"], key=lambda c: -c["epsilon"])[:50]
    )
    q = report["epsilon_quantiles"]
    return f"""<h2>Local DP-SGD on every client</h2>
<p>Neighbouring relation: <b>{esc(str(report['neighbouring_relation']))}</b>. Accountant:
<b>{esc(str(report.get('accountant_version', report['accountant'])))}</b>. Privacy unit: <b>{esc(str(report['unit']))}</b>
({esc(report['unit_meaning'])}). delta (largest over clients): <b>{report['delta']:.2e}</b>.
Rounds: {report['rounds']}. Clients: {report['num_clients']}.</p>
<p>Final epsilon: median {q['p50']:.3f}, 95th percentile {q['p95']:.3f}, max {q['p100']:.3f}.
Budget status: {esc(json.dumps(report['status_counts']))}.
Each epsilon is computed by this report from the client's recorded history (sigma, q and steps per
round, in privacy_report.json), not taken from the client.</p>
<table><caption>Clients, highest epsilon first{', top 50' if report['num_clients'] > 50 else ''}</caption>
<tr><th>client</th><th>epsilon</th><th>budget</th><th>delta</th><th>status</th><th>rounds trained</th></tr>
{rows}</table>"""


def _central_section(report: dict) -> str:
    c = report["central"]
    if not c:
        return "<p>Central DP (DP-FedAvg) was off.</p>"
    return f"""<h2>Central DP across the federation</h2>
<p>{html.escape(c['mechanism'])}; each client's update clipped to {c['clipping_norm']:g}, Gaussian noise
multiplier {c['noise_multiplier']:g}, {c['clients_per_round']} clients per round; accountant
{html.escape(c['accountant'])}, without sampling amplification. Client-level epsilon <b>{c['epsilon']:.3f}</b>
at delta {c['delta']:.2e} after {len(c['history'])} rounds.</p>{_flower_line(c)}"""


def _flower_line(c: dict) -> str:
    """The run's log also prints Flower's own account; say what it is, so the two are not confused."""
    if c.get("flower_epsilon") is None:
        return ""
    return (f"\n<p>The run's log also shows Flower's own RDP account, epsilon {c['flower_epsilon']:.3f} at the "
            "last round, counted from when the ServerApp last started (a resumed run's earlier rounds are not in "
            "it). RDP usually bounds the same releases more loosely than PLD; the epsilon above, over every "
            "release of the run, is the figure this report stands behind.</p>")


def render_html(report: dict, images: dict[str, str]) -> str:
    figs = "".join(f'<figure><img alt="{html.escape(k)}" src="data:image/png;base64,{v}"></figure>'
                   for k, v in images.items())  # fmt: skip
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fedrec privacy report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}
figure{{display:inline-block;margin:0.5em}}</style></head><body>
<h1>Privacy report</h1>
<p>{html.escape(report['scope'])}</p>
{_local_section(report)}
{_central_section(report)}
{figs}
</body></html>
"""
