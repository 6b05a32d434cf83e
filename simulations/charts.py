"""One PNG per results file, drawn from its JSON: what each runner's table shows, as a picture.

    python -m simulations.charts        # redraw every chart from simulations/results/*.json

Runners call `draw(name, report, out)` right after writing `name`.json; this module is the only
place that knows how each report looks, so a chart can be redrawn without re-running anything.
The privacy-utility runner draws its own chart (simulations/privacy_utility.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shared.atomic import atomic_path

RESULTS = Path(__file__).parent / "results"
Report = dict[str, Any]


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _bars(ax, labels: list[str], values: list[float], fmt: str = "{:.1f}") -> None:  # type: ignore[no-untyped-def]
    bars = ax.bar(range(len(values)), values, color=[f"C{i % 10}" for i in range(len(values))])
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.bar_label(bars, [fmt.format(v) for v in values], fontsize=8)


def scale(r: Report, ax_pair) -> None:  # type: ignore[no-untyped-def]
    rows = sorted(r["rows"], key=lambda x: x["clients"])
    labels = [f"{x['clients']:,}\n({x['sampled_per_round']}/round)" for x in rows]
    _bars(ax_pair[0], labels, [x["seconds_per_round_after_first"] for x in rows])
    ax_pair[0].set(title="seconds per round (median of runs)", xlabel="simulated clients")
    _bars(ax_pair[1], labels, [x["peak_rss_mib"] / 1024 for x in rows], "{:.2f}")
    ax_pair[1].set(title="peak RSS, GiB", xlabel="simulated clients")


LONG_RUN = 20  # rounds past which single rounds of a sampled validation are noise
WINDOW = 10


def window_means(values: list[float], size: int = WINDOW) -> list[float]:
    """Means of consecutive windows of `size` values (the last may be shorter)."""
    return [sum(values[i : i + size]) / len(values[i : i + size]) for i in range(0, len(values), size)]


def fed_vs_central(r: Report, ax_pair) -> None:  # type: ignore[no-untyped-def]
    c, f = r["centralized"], r["federated"]
    ax = ax_pair[0]
    if "valid_ndcg" not in c or "valid_ndcg" not in f:  # recorded before the runner kept the curves
        ax.text(0.5, 0.5, "no validation curves in this record", ha="center", transform=ax.transAxes)
    elif len(f["valid_ndcg"]) <= LONG_RUN:
        ax.plot(range(1, len(c["valid_ndcg"]) + 1), c["valid_ndcg"], marker="o", label="centralized, by epoch")
        ax.plot(range(1, len(f["valid_ndcg"]) + 1), f["valid_ndcg"], marker="s", label="federated, by round")
        ax.set(xlabel="epoch / round")
    else:  # hundreds of rounds against a few epochs: the centralized best is the line to reach
        rounds = range(1, len(f["valid_ndcg"]) + 1)
        means = window_means(f["valid_ndcg"])
        ax.plot(rounds, f["valid_ndcg"], color="C1", alpha=0.25, linewidth=0.7, label="federated, by round")
        ax.plot([WINDOW * i + (WINDOW + 1) / 2 for i in range(len(means))], means, color="C1", marker=".",
                label=f"federated, mean of {WINDOW} rounds")  # fmt: skip
        ax.axhline(max(c["valid_ndcg"]), color="C0", linestyle="--",
                   label=f"centralized, best of {len(c['valid_ndcg'])} epochs")  # fmt: skip
        ax.set(xlabel="round")
    if ax.lines:
        ax.legend(fontsize=8)
    ax.set(title="validation full NDCG@10")
    keys = list(c["test"])
    width = 0.4
    ax = ax_pair[1]
    ax.bar([i - width / 2 for i in range(len(keys))], [c["test"][k] for k in keys], width, label="centralized")
    ax.bar([i + width / 2 for i in range(len(keys))], [f["test"][k] for k in keys], width, label="federated")
    ax.set_xticks(range(len(keys)), [k.replace("-", "\n") for k in keys], fontsize=8)
    ax.set(title=f"test, ratio NDCG@10 {r['ratio']['full-ndcg@10']:.2f}")
    ax.legend(fontsize=8)


def overhead(r: Report, ax_pair) -> None:  # type: ignore[no-untyped-def]
    # Without local work is derived only when ClientApps ran one at a time (simulations/overhead.py).
    derived = r["ratio_without_local_work"] is not None
    tuned = r.get("trivial_same_switch_interval")  # recorded since the ServerApp sets the interval
    labels = ["trivial app"] + (["trivial, fedrec's\nswitch interval"] if tuned else []) + ["fedrec"]
    labels += ["fedrec without\nlocal work"] if derived else []
    values = [r["trivial"]["updates_per_second_median"]] + ([tuned["updates_per_second_median"]] if tuned else [])
    values.append(r["fedrec"]["updates_per_second_median"])
    ratios = [r["ratio"]]
    if derived:
        values.append(r["fedrec"]["updates_per_second_without_local_work_median"])
        ratios.append(r["ratio_without_local_work"])
    _bars(ax_pair[0], labels, values)
    ax_pair[0].set(title="client updates per second (median of runs)")
    _bars(ax_pair[1], ["fedrec", "without\nlocal work"][: len(ratios)], ratios, "{:.2f}")
    ax_pair[1].axhline(0.5, ls="--", c="k", lw=1, label="goal 0.5")
    ax_pair[1].set(title="rate / trivial app's rate")
    ax_pair[1].legend(fontsize=8)


def serving(r: Report, ax_pair) -> None:  # type: ignore[no-untyped-def]
    for ax, key in zip(ax_pair, ("p50_ms", "p95_ms")):
        _bars(ax, [f"{x['catalog']}\n{x['items']:,} items" for x in r["rows"]], [x[key] for x in r["rows"]])
        ax.set(title=f"one user's top-10, {key[:3]} ms")


def edge_footprint(r: Report, ax_pair) -> None:  # type: ignore[no-untyped-def]
    runs = r.get("run_medians", [r["seconds_per_round_median"]])
    _bars(ax_pair[0], [f"run {i + 1}" for i in range(len(runs))], runs)
    ax_pair[0].set(title=f"seconds per round, median of each run ({r['seconds_per_round_median']:.1f})")
    _bars(ax_pair[1], ["SuperNode process tree"], [r["peak_rss_mib"]], "{:.0f}")
    ax_pair[1].set(title="peak RSS, MiB")


def federated(r: Report, ax_pair) -> None:  # type: ignore[no-untyped-def]
    runs = r["runs"]
    _bars(ax_pair[0], [x["name"] for x in runs], [x["seconds_per_round_median"] for x in runs])
    ax_pair[0].set(title="seconds per round (median of runs)")
    _bars(ax_pair[1], [x["name"] for x in runs], [x["peak_rss_mib"] / 1024 for x in runs], "{:.2f}")
    ax_pair[1].set(title="peak RSS, GiB")


def dp_step(r: Report, ax_pair) -> None:  # type: ignore[no-untyped-def]
    modes = list(r["steps"])
    _bars(ax_pair[0], modes, [r["steps"][m]["median_ms"] for m in modes])
    ax_pair[0].set(title=f"ms per step on {r['device']} (median of {r['repeats']})")
    _bars(ax_pair[1], modes, [r["steps"][m].get("ratio_to_plain", 1.0) for m in modes], "{:.2f}")
    ax_pair[1].set(title="ratio to the plain step")


def centralized(r: Report, ax_pair) -> None:  # type: ignore[no-untyped-def]
    names = list(r["variants"])
    for ax, stage in zip(ax_pair, ("retrieval", "ranking")):
        _bars(ax, names, [r["variants"][n]["test"][stage]["full"]["ndcg@10"] for n in names], "{:.4f}")
        ax.set(title=f"test full NDCG@10, {'retrieval only' if stage == 'retrieval' else 'retrieval + ranking'}")


def baselines(r: Report, ax_pair) -> None:  # type: ignore[no-untyped-def]
    names = list(r["results"])
    for ax, protocol in zip(ax_pair, ("full", "sampled")):
        _bars(ax, names, [r["results"][n]["popularity"][protocol]["hr@10"] for n in names], "{:.3f}")
        ax.set(title=f"popularity, {protocol} HR@10")


def canary_audit(r: Report, ax_pair) -> None:  # type: ignore[no-untyped-def]
    rows = r["rows"]
    ax = ax_pair[0]
    _bars(ax, [x["name"] for x in rows], [x["epsilon_lower_bound"] for x in rows], "{:.2f}")
    for i, x in enumerate(rows):
        if x["reported_epsilon"] is not None:
            ax.plot([i - 0.4, i + 0.4], [x["reported_epsilon"]] * 2, c="k", lw=2, label="reported epsilon")
    ax.axhline(1.0, ls="--", c="0.5", lw=1)
    ax.set(title="epsilon lower bound (95%), canary audit")
    ax.legend(fontsize=8)
    for x in rows:  # the scores behind the bounds: trained-on canaries should score higher
        scores, members = np.asarray(x["scores"]), np.asarray(x["members"], dtype=bool)
        ax_pair[1].hist(scores[members] - np.median(scores), bins=30, histtype="step", label=f"{x['name']}: trained on")
        ax_pair[1].hist(scores[~members] - np.median(scores), bins=30, histtype="step", ls="--",
                        label=f"{x['name']}: held out")  # fmt: skip
    ax_pair[1].set(title="canary scores, minus each run's median", xlabel="mean log-probability of the next item")
    ax_pair[1].legend(fontsize=7)


CHARTS: dict[str, Callable[[Report, Any], None]] = {
    "scale": scale, "fed_vs_central": fed_vs_central, "overhead": overhead, "serving": serving,
    "edge_footprint": edge_footprint, "federated": federated, "dp_step": dp_step,
    "centralized": centralized, "ablations": centralized, "baselines": baselines,
    "canary_audit": canary_audit,
}  # fmt: skip


def chart_for(name: str) -> Callable[[Report, Any], None] | None:
    """The chart of a results file name: exact ('scale'), or its prefix ('dp_step-cpu')."""
    return CHARTS.get(name) or CHARTS.get(name.split("-")[0])


def draw(name: str, report: Report, out: Path) -> None:
    """Write out/`name`.png for a report this module knows; nothing for others."""
    chart = chart_for(name)
    if chart is None:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    chart(report, axes)
    fig.text(0.01, -0.04, f"{name}, commit {report.get('provenance', {}).get('commit', '?')[:7]}", fontsize=7,
             ha="left", va="bottom", color="0.4")  # fmt: skip
    with atomic_path(out / f"{name}.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def main() -> int:
    for path in sorted(RESULTS.glob("*.json")):
        if chart_for(path.stem) is not None:
            draw(path.stem, json.loads(path.read_text()), RESULTS)
            print(f"charts: {path.stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
