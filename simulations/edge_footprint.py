"""Edge footprint: one SuperNode's peak memory and seconds per round on an ML-1M regional partition.

    python -m simulations.edge_footprint [--partition-id 0] [--rounds 3] [--repeats 3]

A real deployment on loopback (cli/local/deployment.py: SuperLink + one SuperNode, TLS, node auth)
with the main job's settings (DP-SGD, epsilon 8). The SuperNode's memory is its whole process
tree (flower-supernode, its SuperExec and the ClientApp processes it starts for each message),
sampled every 0.5 s. Seconds per round are the server's (train + federated validation): each of
--repeats fresh deployments' median round, then the median over runs; the node's own training
time per round comes from its train-seconds metric.
Writes simulations/results/edge_footprint.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from cli import main as fedrec
from cli.local.deployment import LocalDeployment
from simulations.memory import PeakRSS
from simulations.provenance import provenance, provenance_lines, write_results

RESULTS = Path(__file__).parent / "results"


def one_run(dataset: str, partition_id: int, rounds: int) -> dict:
    """A fresh deployment, `rounds` rounds: the server's history, the node's peak memory, its users."""
    with tempfile.TemporaryDirectory(prefix="fedrec-edge-") as tmp:
        work = Path(tmp)
        data = work / "data"
        if fedrec(["data", "export-partition", "--dataset", dataset, "--partitioning", "region",
                   "--partition-id", str(partition_id), "--out", str(data)]) != 0:  # fmt: skip
            raise SystemExit("edge_footprint: error: the export failed")
        if fedrec(["catalog", "build", "--dataset", dataset, "--out", str(work / "catalog")]) != 0:
            raise SystemExit("edge_footprint: error: the catalog build failed")
        users = sum(1 for _ in open(data / "users.csv")) - 1
        with LocalDeployment(work, [data], work / "catalog") as dep:
            with PeakRSS(dep.nodes[0].pid) as peak:
                rc = dep.flwr_run({"dataset": dataset, "catalog-path": str(work / "catalog"), "num-server-rounds": rounds,
                                   "min-train-nodes": 1, "output-dir": str(work / "out")}, timeout=3600)  # fmt: skip
            if rc != 0:
                raise SystemExit(f"edge_footprint: error: the run failed (log: {work / 'flwr-run.log'})")
        (run_dir,) = (work / "out").glob("run-*")
        history = json.loads((run_dir / "metrics.json").read_text())["history"]
    return {"users": users, "history": history, "peak_rss_mib": round(peak.bytes / 2**20),
            "seconds_per_round_median": statistics.median(r["seconds"] for r in history),
            "node_train_seconds_median": statistics.median(r["train"]["train-seconds"] for r in history)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens-1m")
    parser.add_argument("--partition-id", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"edge_footprint: error: --repeats must be >= 1, got {args.repeats}")
    started = provenance()  # the code that runs, whatever the tree holds by the end
    runs = []
    for i in range(args.repeats):
        print(f"edge_footprint: one SuperNode, partition {args.partition_id}, {args.rounds} rounds, "
              f"run {i + 1}/{args.repeats}", flush=True)
        runs.append(one_run(args.dataset, args.partition_id, args.rounds))
    per_round = statistics.median(r["seconds_per_round_median"] for r in runs)
    train = statistics.median(r["node_train_seconds_median"] for r in runs)
    users, history = runs[0]["users"], runs[0]["history"]
    report = {"provenance": started, "dataset": args.dataset, "partitioning": "region",
              "partition_id": args.partition_id, "users": users, "rounds": len(history), "repeats": len(runs),
              "seconds_per_round_median": per_round, "node_train_seconds_median": train,
              "run_medians": [r["seconds_per_round_median"] for r in runs],
              "peak_rss_mib": max(r["peak_rss_mib"] for r in runs), "history": history}  # fmt: skip
    md = "\n".join([
        "# Edge footprint: one SuperNode on an ML-1M regional partition", "",
        *provenance_lines(started), "",
        f"A SuperLink and one SuperNode on loopback (TLS, node authentication), region partition "
        f"{args.partition_id} ({users} users), DP-SGD at the app's defaults, {len(history)} rounds, "
        f"{len(runs)} fresh deployments. Times: the median over runs of each run's median round; "
        "memory: the largest run.", "",
        "| measure | value |", "|---|---|",
        f"| seconds per round (train + federated validation) | {per_round:.1f} |",
        f"| of which the node's local DP training | {train:.1f} |",
        f"| peak RSS of the SuperNode's process tree | {report['peak_rss_mib']} MiB |", "",
        "Flower starts a fresh ClientApp process for every message, so each train and evaluate "
        "pays the start-up (Python, torch, the catalog, the model) on top of the work.",
    ]) + "\n"  # fmt: skip
    write_results(args.out, "edge_footprint", report, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
