"""The README's main job, `make main`, timed and repeated (#24: medians of repeated runs).

    python -m simulations.main_job --repeats 3

Each repeat is a whole `make main OUT=<work>/run-<k>`, as a newcomer runs it: the consented-only
pretraining, the popularity and pretrained baselines on the non-consented users, then the DP
federation. The repeats differ in the DP noise and the Poisson sampling, which come from a secure
random source and so cannot be seeded, and a little in the pretraining, which is seeded but not
bit-for-bit repeatable across runs on this CPU. Wall time is per repeat, measured here; the
quality numbers are the federation's test metrics on the users who did not consent, beside
popularity and the pretrained model on the same users, in the same repeat.

Writes simulations/results/main-job.json and .md with every repeat and the medians, the commit and
the machine (`--name` names another recipe's record, its make variables after the options:
`--name main-job-3-rounds ROUNDS=3`). Each repeat is recorded as it finishes, so an interrupted
session keeps what ran.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shared.atomic import write_json, write_text
from simulations.provenance import provenance

RESULTS = Path(__file__).parent / "results"
METRICS = ("full-hr@10", "full-ndcg@10", "sampled-hr@10", "sampled-ndcg@10")


def baseline(path: Path) -> dict[str, float]:
    """`fedrec evaluate --json`'s protocols as the table's flat keys: a checkpoint's two-stage
    (ranking) metrics, or popularity's, which has one stage."""
    data = json.loads(path.read_text())
    data = data.get("ranking", data)
    return {key: float(data[key.split("-", 1)[0]][key.split("-", 1)[1]]) for key in METRICS}


def federated(out: Path) -> dict[str, Any]:
    """The run's two-stage test metrics on the non-consented users, its epsilons and round times."""
    (run_dir,) = sorted(out.glob("run-*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics.get("test_non_consented") or metrics["test"]
    report = json.loads((run_dir / "privacy_report.json").read_text())
    return {
        "test": {key: float(test[f"ranking-{key}"]) for key in METRICS},
        "epsilon_max": report["epsilon_quantiles"].get("p100"),
        "delta": report.get("delta"),
        "round_seconds": [round(h["seconds"], 1) for h in metrics["history"]],
        "run_dir": str(run_dir),
    }


def one_repeat(work: Path, k: int, make_args: list[str]) -> dict[str, Any]:
    out = work / f"run-{k}"
    shutil.rmtree(out, ignore_errors=True)  # a half-finished earlier attempt would be read as this one
    command = ["make", "main", f"OUT={out}", *make_args]
    print(f"main_job: repeat {k}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"main_job: error: repeat {k}: `{' '.join(command)}` failed")
    seconds = time.perf_counter() - started
    return {"repeat": k, "wall_seconds": round(seconds, 1), "popularity": baseline(out / "popularity.json"),
            "pretrained": baseline(out / "pretrained.json"), **federated(out)}  # fmt: skip


def medians(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "wall_seconds": statistics.median(r["wall_seconds"] for r in repeats),
        **{name: {key: statistics.median(r[name][key] for r in repeats) for key in METRICS}
           for name in ("popularity", "pretrained", "test")},
        "epsilon_max": statistics.median(r["epsilon_max"] for r in repeats),
    }  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    p, m = report["provenance"], report["median"]
    lines = ["# The README's main job, timed and repeated", "",
             f"Make variables: `{' '.join(report.get('make_args', [])) or 'the defaults'}`", "",
             f"Command: `{p['command']}` (each repeat: `make main OUT=...`)  ",
             f"Commit: `{p['commit'][:7]}`  ", f"Machine: {p['machine']}  ", f"Date: {p['date']}", "",
             "Test items of the users who did not consent (ML-1M, 10% consented): their data reached the "
             "model only through DP fine-tuning. Popularity and the pretrained model are measured on the "
             "same users in the same repeat.", "",
             f"Median of {len(report['repeats'])} repeats: wall time {m['wall_seconds'] / 60:.1f} min, "
             f"max client epsilon {m['epsilon_max']:.2f}.", "",
             "| model | full HR@10 | full NDCG@10 | sampled HR@10 | sampled NDCG@10 |", "|---|---|---|---|---|"]  # fmt: skip
    for name, label in (("popularity", "popularity"), ("pretrained", "pretrained on consented users"),
                        ("test", "main job: private fine-tuning")):  # fmt: skip
        lines.append(f"| {label} (median) | " + " | ".join(f"{m[name][k]:.4f}" for k in METRICS) + " |")
    ratio = m["test"]["sampled-hr@10"] / m["popularity"]["sampled-hr@10"]
    ndcg = m["test"]["full-ndcg@10"] / m["popularity"]["full-ndcg@10"]
    lines += ["", f"Private model over popularity: {ratio:.2f}x sampled HR@10, {ndcg:.2f}x full NDCG@10.", "",
              "| repeat | wall | rounds (s) | max epsilon | full NDCG@10 | sampled HR@10 |", "|---|---|---|---|---|---|"]
    for r in report["repeats"]:
        lines.append(f"| {r['repeat']} | {r['wall_seconds'] / 60:.1f} min | {', '.join(map(str, r['round_seconds']))} | "
                     f"{r['epsilon_max']:.2f} | {r['test']['full-ndcg@10']:.4f} | {r['test']['sampled-hr@10']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("outputs/main-job"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="main-job", help="the record's file name, without .json or .md")
    parser.add_argument("make_args", nargs="*", help="extra `make` variables, e.g. ROUNDS=2")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    prov = provenance()
    prov["command"] = "python -m simulations.main_job " + " ".join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {"provenance": prov, "make_args": args.make_args, "repeats": []}
    for k in range(1, args.repeats + 1):
        report["repeats"].append(one_repeat(args.work.resolve(), k, args.make_args))
        report["median"] = medians(report["repeats"])
        write_json(args.out / f"{args.name}.json", report)
        write_text(args.out / f"{args.name}.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
