"""Membership-inference audit of trained checkpoints: non-private beside DP.

    python -m simulations.audit NAME=CHECKPOINT [NAME=CHECKPOINT ...] [--dataset movielens-1m]

Each checkpoint is attacked with `fedrec audit`'s score-threshold attack (shared/privacy/audit.py)
over every user; the epsilon of a DP checkpoint is read from its run's privacy report when it
has one. Writes simulations/results/audit.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.config import DataConfig
from shared.data.dataset import load_dataset
from shared.models.checkpoint import check_catalog, load_checkpoint
from shared.privacy.audit import membership_audit
from simulations.provenance import provenance, provenance_lines, write_results

RESULTS = Path(__file__).parent / "results"


def epsilon_of(checkpoint: Path) -> float | None:
    report = checkpoint.parent / "privacy_report.json"
    if not report.exists():
        return None
    return float(json.loads(report.read_text())["epsilon_quantiles"]["p100"])


def _eps(value: float | None) -> str:
    return "no DP" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="NAME=DIR")
    parser.add_argument("--dataset", default="movielens-1m")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    dataset = load_dataset(DataConfig(dataset=args.dataset))
    rows = []
    for spec in args.checkpoints:
        name, _, path = spec.partition("=")
        model = load_checkpoint(path)
        check_catalog(model, dataset)
        result = membership_audit(model, dataset)
        rows.append({"name": name, "checkpoint": path, "epsilon": epsilon_of(Path(path)), **result})
        print(f"audit: {name}: AUC {result['auc']:.3f} ({result['ci_low']:.3f}-{result['ci_high']:.3f})", flush=True)
    report = {"provenance": provenance(), "dataset": args.dataset, "rows": rows}
    p = report["provenance"]
    md = "\n".join([
        f"# Membership-inference audit on {args.dataset}", "",
        *provenance_lines(p), "",
        "Score-threshold attack per interaction: each user's last training interaction (member) against "
        "their test interaction (non-member), scored by the retrieval logit given the items before it. "
        "AUC 0.5: the score says nothing about membership. 95% interval: bootstrap over users. "
        "Goal (issue 8): AUC <= 0.55 at epsilon <= 8.", "",
        "| model | epsilon (max over clients) | attack AUC | 95% CI | users |", "|---|---|---|---|---|",
        *[f"| {r['name']} | {_eps(r['epsilon'])} | {r['auc']:.3f} | {r['ci_low']:.3f}-{r['ci_high']:.3f} "
          f"| {r['users']:,} |" for r in rows],
    ]) + "\n"  # fmt: skip
    write_results(args.out, "audit", report, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
