"""Popularity baseline on MovieLens under both protocols, and the harness's own speed.

    python -m simulations.baselines [--datasets movielens-100k movielens-1m] [--repeats 3]

Writes simulations/results/baselines.json, .md and .png. Evaluation time is the median of
`--repeats` runs of the full harness (both protocols) over every user.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from shared.config import DataConfig
from shared.data.dataset import load_dataset
from shared.errors import FedrecError
from shared.eval.protocols import evaluate
from shared.models.popularity import Popularity
from simulations.provenance import provenance, write_results

RESULTS = Path(__file__).parent / "results"
ANCHORS = {"movielens-1m": "NCF paper (He et al. 2017), ItemPop sampled-100 HR@10 = 0.454"}


def run(datasets: list[str], repeats: int) -> dict:
    rows = {}
    for name in datasets:
        dataset = load_dataset(DataConfig(dataset=name))
        model = Popularity.fit(dataset)
        times, result = [], {}
        for _ in range(repeats):
            start = time.perf_counter()
            result = evaluate(dataset, model, "test")
            times.append(time.perf_counter() - start)
        rows[name] = {
            "users": dataset.num_users, "items": dataset.num_items,
            "popularity": result, "eval_seconds_median": statistics.median(times),
            "eval_seconds_all": times, "anchor": ANCHORS.get(name, ""),
        }  # fmt: skip
    return {"provenance": provenance(), "results": rows}


def markdown(report: dict) -> str:
    p = report["provenance"]
    lines = [
        "# Popularity baseline (test item, leave-one-out)", "",
        f"Command: `{p['command']}`  ", f"Commit: `{p['commit']}`  ",
        f"Machine: {p['machine']['cpu']}, {p['machine']['cores']} cores, "
        f"{p['machine']['ram_gib']} GiB  ", f"Date: {p['date']}", "",
        "| dataset | full HR@10 | full NDCG@10 | sampled HR@10 | sampled NDCG@10 | MRR (full) "
        "| eval s (median) | anchor |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, r in report["results"].items():
        f, s = r["popularity"]["full"], r["popularity"]["sampled"]
        lines.append(
            f"| {name} | {f['hr@10']:.4f} | {f['ndcg@10']:.4f} | {s['hr@10']:.4f} | "
            f"{s['ndcg@10']:.4f} | {f['mrr']:.4f} | {r['eval_seconds_median']:.2f} | {r['anchor']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["movielens-100k", "movielens-1m"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        report = run(args.datasets, args.repeats)
    except FedrecError as err:
        print(f"baselines: error: {err}", file=sys.stderr)
        return 2
    write_results(args.out, "baselines", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
