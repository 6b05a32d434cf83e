"""The privacy-utility curve on ML-1M: test HR@10 and NDCG@10 (both protocols) against epsilon.

    python -m simulations.privacy_utility --setting regional --epsilons 1 2 4 8 inf \\
        --run-config num-server-rounds=3
    python -m simulations.privacy_utility --setting per-user --epsilons 1 2 4 8 inf \\
        --run-config num-server-rounds=3 fraction-train=0.01 fraction-evaluate=0.01

Settings: `regional` (10 regional silos, user-level DP) and `per-user` (one client per user,
record-level DP). `inf` is the same run without DP. Each point is one `fedrec simulate` run
(timed as in simulations.federated); finished points are kept in
simulations/results/privacy_utility.json, so an interrupted sweep resumes where it stopped
(`--force` reruns). Writes privacy_utility.json, .md and .png, and privacy_epsilons.png (the
epsilon each client spent, per budget); `--replot` redraws them from the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from shared.atomic import atomic_path, write_json, write_text
from simulations.federated import run as timed_run
from simulations.provenance import provenance

RESULTS = Path(__file__).parent / "results"
SETTINGS = {"regional": ["partitioning=region"], "per-user": ["partitioning=user", "min-train-nodes=2"]}
METRICS = ("ranking-full-hr@10", "ranking-full-ndcg@10", "ranking-sampled-hr@10", "ranking-sampled-ndcg@10")


def point_overrides(setting: str, eps: float, extra: list[str]) -> list[str]:
    privacy = ["dp=false"] if math.isinf(eps) else ["dp=true", f"target-epsilon={eps:g}"]
    return [*SETTINGS[setting], *privacy, *extra]


def markdown(report: dict) -> str:
    p = report["provenance"]
    lines = ["# Privacy-utility on ML-1M (test item, two-stage model)", "",
             f"Machine: {p['machine']}  ", "Each point ran at the commit in its row.",
             "Budget per client; `inf` is the same run without DP. Regional: user-level DP within each "
             "of 10 silos. Per-user: record-level DP, one client per user. Each point is one seeded run; "
             "its timing stays in privacy_utility.json (one run, not a benchmark: see federated.md and "
             "dp_step-cpu.md for DP's cost, medians of repeated runs).", "",
             "| setting | epsilon | rounds | full HR@10 | full NDCG@10 | sampled HR@10 | sampled NDCG@10 "
             "| median client epsilon | commit | command |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(report["points"], key=lambda r: (r["setting"], r["epsilon"])):
        t = r["test"]
        lines.append(
            f"| {r['setting']} | {r['epsilon']:g} | {r['rounds']} | "
            + " | ".join(f"{t.get(m, float('nan')):.4f}" for m in METRICS)
            + f" | {r.get('median_client_epsilon', float('nan')):.3f} "
              f"| `{r.get('commit', p['commit'])[:7]}` | `{r['command']}` |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def client_epsilons(run_dir: Path) -> list[float] | None:
    """Every client's spent epsilon, from the run's own privacy report (None without DP)."""
    report = Path(run_dir) / "privacy_report.json"
    if not report.exists():
        return None
    return sorted(float(c["epsilon"]) for c in json.loads(report.read_text())["clients"])


def plot_epsilons(report: dict, path: Path) -> None:
    """Per setting, the spread of what each client spent against the budget it was given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SETTINGS), figsize=(10, 3.8), sharey=True)
    for ax, setting in zip(axes, SETTINGS):
        pts = sorted((r for r in report["points"] if r["setting"] == setting and r.get("client_epsilons")),
                     key=lambda r: r["epsilon"])  # fmt: skip
        if pts:
            ax.boxplot([r["client_epsilons"] for r in pts], positions=range(len(pts)), widths=0.5)
            ax.scatter(range(len(pts)), [r["epsilon"] for r in pts], marker="_", s=400, c="C3", label="budget")
            ax.set_xticks(range(len(pts)), [f"{r['epsilon']:g}\n({len(r['client_epsilons'])} clients)" for r in pts])
            ax.legend(fontsize=7)
        ax.set(title=f"{setting}: epsilon spent per client", xlabel="target epsilon", ylabel="epsilon spent")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("ranking-full-ndcg@10", "ranking-sampled-hr@10")):
        for color, setting in zip(("C0", "C1"), SETTINGS):
            pts = sorted((r for r in report["points"] if r["setting"] == setting), key=lambda r: r["epsilon"])
            finite = [r for r in pts if math.isfinite(r["epsilon"])]
            if finite:
                ax.plot([r["epsilon"] for r in finite], [r["test"][metric] for r in finite], marker="o",
                        c=color, label=setting)  # fmt: skip
            for r in pts:
                if not math.isfinite(r["epsilon"]):
                    ax.axhline(r["test"][metric], ls="--", lw=1, c=color, label=f"{setting}, no DP")
        eps = sorted({r["epsilon"] for r in report["points"] if math.isfinite(r["epsilon"])})
        ax.set(xscale="log", xlabel="epsilon (per client)", ylabel=metric, title=metric)
        ax.set_xticks(eps, [f"{e:g}" for e in eps])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def save(report: dict, out: Path) -> None:
    """privacy_utility.json (JSON has no infinity: "inf"), .md, and both plots."""
    write_json(out / "privacy_utility.json", {**report, "points": [
        {**r, "epsilon": r["epsilon"] if math.isfinite(r["epsilon"]) else "inf"} for r in report["points"]]})  # fmt: skip
    write_text(out / "privacy_utility.md", markdown(report))
    plot(report, out / "privacy_utility.png")
    plot_epsilons(report, out / "privacy_epsilons.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=SETTINGS, required=True)
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1, 2, 4, 8, math.inf])
    parser.add_argument("--run-config", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=Path("outputs/benchmarks"))
    parser.add_argument("--force", action="store_true", help="rerun points already recorded")
    parser.add_argument("--replot", action="store_true", help="only redraw the page and plot from the JSON")
    args = parser.parse_args(argv)
    path = args.out / "privacy_utility.json"
    report = json.loads(path.read_text()) if path.exists() else {"points": []}
    for r in report["points"]:  # JSON has no infinity: "inf" on disk, a float in memory
        r["epsilon"] = float(r["epsilon"])
    if args.replot:
        if not report["points"]:
            raise SystemExit(f"privacy_utility: error: {path} has no points to plot")
        for r in report["points"]:  # points recorded before the runner kept them, from their runs
            if "client_epsilons" not in r and (found := client_epsilons(Path(r["run_dir"]))) is not None:
                r["client_epsilons"] = found
        save(report, args.out)
        return 0
    for i, eps in enumerate(args.epsilons, 1):
        overrides = point_overrides(args.setting, eps, args.run_config)
        command = "fedrec simulate --run-config " + " ".join(overrides)
        if not args.force and any(r["command"] == command for r in report["points"]):
            print(f"[{i}/{len(args.epsilons)}] {args.setting} epsilon {eps:g}: recorded, skipped", flush=True)
            continue
        print(f"[{i}/{len(args.epsilons)}] {args.setting} epsilon {eps:g}: running", flush=True)
        started = provenance()  # the code this point runs, whatever the tree holds when it ends
        row = timed_run(f"{args.setting}-eps-{eps:g}", overrides, args.work.resolve())
        row.update(setting=args.setting, epsilon=eps, commit=started["commit"])
        privacy = Path(row["run_dir"]) / "privacy_report.json"
        if privacy.exists():
            row["median_client_epsilon"] = json.loads(privacy.read_text())["epsilon_quantiles"]["p50"]
            row["client_epsilons"] = client_epsilons(Path(row["run_dir"]))
        report["points"] = [r for r in report["points"] if r["command"] != command] + [row]
        report["provenance"] = {**report.get("provenance", {}), "machine": started["machine"]}
        save(report, args.out)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
