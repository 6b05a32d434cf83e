"""Federated runs on this machine, timed: seconds per round, peak memory, bytes per client.

    python -m simulations.federated --name regional --run-config num-server-rounds=3
    python -m simulations.federated --name per-user --run-config partitioning=user \\
        fraction-train=0.01 fraction-evaluate=0.01 min-train-nodes=2 num-server-rounds=2

Each invocation runs `fedrec simulate` --repeats times (default 3) and records one row in
simulations/results/federated.json, .md and .png, with the command, commit and machine:
seconds per round is the median over runs of each run's median round; test metrics are the
first run's (the runs are seeded alike).
Peak memory is the largest total resident memory of the whole process tree (SuperLink, Ray
workers, clients), sampled every half second.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from shared.atomic import write_json
from simulations.memory import PeakRSS
from simulations.provenance import git_commit, provenance, write_results

RESULTS = Path(__file__).parent / "results"


def run(name: str, overrides: list[str], out_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "cli", "simulate", "--run-config",
           f"output-dir={out_dir}", *overrides]  # fmt: skip
    proc = subprocess.Popen(cmd)
    start = time.perf_counter()
    with PeakRSS(proc.pid, with_ray=True) as sampler:
        code = proc.wait()
    peak = sampler.bytes
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"federated: error: the run exited {code}")
    run_dir = max(out_dir.glob("run-*"), key=lambda p: p.stat().st_mtime)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rounds = metrics["history"]
    return {
        "name": name, "command": "fedrec simulate --run-config " + " ".join(overrides),
        "rounds": len(rounds), "wall_seconds": wall,
        "seconds_per_round_median": statistics.median(r["seconds"] for r in rounds),
        "seconds_per_round": [r["seconds"] for r in rounds],
        "bytes_per_client_each_way": rounds[-1]["bytes_per_client_each_way"],
        "peak_rss_mib": round(peak / 2**20), "test": metrics["test"], "run_dir": str(run_dir),
    }  # fmt: skip


def run_repeated(name: str, overrides: list[str], out_dir: Path, repeats: int, *, skip_first: bool = False) -> dict:
    """`repeats` whole runs: each run's median round, then the median over runs.

    skip_first leaves each run's first round out of its median (actors starting). Peak memory
    is the largest of the runs; test metrics are the first run's (the runs are seeded alike).
    Each finished run is kept in out_dir: a stopped series, started again at the same commit
    with the same settings, only runs what it was missing.
    """
    if repeats < 1:
        raise SystemExit(f"federated: error: --repeats must be >= 1, got {repeats}")
    commit, runs = git_commit(), []
    series = hashlib.sha1(" ".join([name, *overrides]).encode()).hexdigest()[:12]
    for i in range(repeats):
        kept = out_dir / f"timed-{series}-{i + 1}.json"
        if kept.exists() and (row := json.loads(kept.read_text())).get("commit") == commit and "dirty" not in commit:
            print(f"federated: {name}, run {i + 1}/{repeats} finished earlier: {kept}", flush=True)
        else:
            print(f"federated: {name}, run {i + 1}/{repeats}", flush=True)
            row = {**run(name, overrides, out_dir), "commit": commit}
            write_json(kept, row)
        runs.append(row)
    medians = [statistics.median(r["seconds_per_round"][1:] if skip_first and r["rounds"] > 1
                                 else r["seconds_per_round"]) for r in runs]  # fmt: skip
    return {**runs[0], "repeats": len(runs), "seconds_per_round_median": statistics.median(medians),
            "run_medians": medians, "wall_seconds": statistics.median(r["wall_seconds"] for r in runs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}  # fmt: skip


def markdown(report: dict) -> str:
    p = report["provenance"]
    lines = [
        "# Federated runs on this machine", "",
        f"Machine: {p['machine']['cpu']}, {p['machine']['cores']} cores, {p['machine']['ram_gib']} GiB  ",
        "s/round: the median over runs of each run's median round.", "",
        "| run | rounds | runs | s/round (median) | peak RSS MiB | MiB per client each way | test NDCG@10 full (two-stage) "
        "| test HR@10 sampled (two-stage) | commit | command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in report["runs"]:
        lines.append(
            f"| {r['name']} | {r['rounds']} | {r.get('repeats', 1)} | {r['seconds_per_round_median']:.1f} | {r['peak_rss_mib']} "
            f"| {r['bytes_per_client_each_way'] / 2**20:.2f} | {r['test'].get('ranking-full-ndcg@10', float('nan')):.4f} "
            f"| {r['test'].get('ranking-sampled-hr@10', float('nan')):.4f} | `{r.get('commit', p.get('commit', '?'))[:7]}` "
            f"| `{r['command']}` |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--run-config", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=Path("outputs/benchmarks"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    started = provenance()  # the code that runs, whatever the tree holds by the end
    row = {**run_repeated(args.name, args.run_config, args.work.resolve(), args.repeats), "commit": started["commit"]}
    path = args.out / "federated.json"
    report = json.loads(path.read_text()) if path.exists() else {"runs": []}
    report["provenance"] = {**report.get("provenance", {}), "machine": started["machine"]}
    report["runs"] = [r for r in report["runs"] if r["name"] != args.name] + [row]
    write_results(args.out, "federated", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
