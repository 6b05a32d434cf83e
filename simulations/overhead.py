"""Client updates per second: fedrec's federation against a trivial Flower app, same run.

    python -m simulations.overhead [--dataset movielens-100k] [--rounds 4] [--fraction 0.1] \\
        [--client-cpus 0] [--set KEY=VALUE ...]

Both apps run on one private simulation SuperLink with one SuperNode per user and the same
fraction of nodes sampled per round. The trivial app (simulations/trivial_app) echoes an array
as large as fedrec's update; fedrec runs without DP, so local work is one user's few batches.
The rate of a round is its updates over its seconds (fedrec: the training half of the round);
the first round (actors starting) is left out and the median of the rest is reported.
fedrec's clients also report their seconds of local work; with the one client actor a 2-core
machine runs, clients run one after another, so a round's seconds less its clients' local work
is what the federation itself costs, and its rate is what fedrec would reach with no local work.
fedrec's ServerApp and ClientApp shorten Python's GIL switch interval (shared/gil_switch.py); the
trivial app runs twice, with Flower's defaults (the goal's baseline) and with that same interval
on both sides, so the record shows how much of fedrec's rate the setting alone gives any app.
--client-cpus N gives each simulated ClientApp N cores (Flower's default, 0, is 2: one ClientApp
at a time on a 2-core machine); both apps get the same share. When ClientApps run concurrently
their local work overlaps, so the rate without it is not derived (left null).
--set passes run-config keys to fedrec: a smaller model (`--set dim=16 num-layers=1 num-heads=1
max-len=20`) measures the federation with less local work per client.
Writes simulations/results/overhead.json, .md and .png; overhead-cpus<N> with --client-cpus and
one '-<key><value>' per --set key in the name (overhead-dim16-...).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from cli.app import app_dir
from cli.local.superlink import flwr_run, local_superlink
from cli.simulate import parse_overrides
from shared.config import DataConfig
from shared.data.dataset import load_dataset
from shared.gil_switch import SWITCH_INTERVAL
from simulations.provenance import provenance, provenance_lines, write_results

RESULTS = Path(__file__).parent / "results"
TRIVIAL_APP = Path(__file__).parent / "trivial_app"


def rates(rounds: list[dict], updates: str, seconds: str) -> list[float]:
    return [r[updates] / r[seconds] for r in rounds[1:]]


def overhead_rates(rounds: list[dict]) -> list[float]:
    """Updates per second of a fedrec round with its clients' local work taken out."""
    return [r["clients_trained"] / (r["seconds_train"] - r["clients_trained"] * r["train"]["train-seconds"])
            for r in rounds[1:]]  # fmt: skip


def one_run(args: argparse.Namespace, nodes: int) -> tuple[list[dict], list[dict], list[dict]]:
    """fedrec, then the trivial app with Flower's defaults and with fedrec's switch interval, on
    one private SuperLink: their per-round records."""
    with tempfile.TemporaryDirectory(prefix="fedrec-overhead-") as tmp:
        work = Path(tmp)
        with local_superlink(work / "flwr") as env, app_dir() as app:
            ours = {"dataset": args.dataset, "partitioning": "user", "dp": False, "num-server-rounds": args.rounds,
                    "fraction-train": args.fraction, "fraction-evaluate": args.fraction, "min-train-nodes": 1,
                    "output-dir": str(work / "out"), **parse_overrides(args.set)}  # fmt: skip
            if flwr_run(app, env, nodes, ours, client_cpus=args.client_cpus) != 0:
                raise SystemExit("overhead: error: the fedrec run failed")
            (run_dir,) = (work / "out").glob("run-*")
            history = json.loads((run_dir / "metrics.json").read_text())["history"]
            trivial = []
            for interval in (0.0, SWITCH_INTERVAL):
                trivial_cfg = {"num-server-rounds": args.rounds, "fraction-train": args.fraction,
                               "array-floats": history[-1]["bytes_per_client_each_way"] // 4,
                               "result-file": str(work / "trivial.json"), "switch-interval": interval}  # fmt: skip
                if flwr_run(TRIVIAL_APP, env, nodes, trivial_cfg, client_cpus=args.client_cpus) != 0:
                    raise SystemExit("overhead: error: the trivial run failed")
                trivial.append(json.loads((work / "trivial.json").read_text())["rounds"])
            return history, trivial[0], trivial[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3, help="runs of both apps; medians are reported")
    parser.add_argument("--client-cpus", type=int, default=0,
                        help="cores per simulated ClientApp, both apps (0: Flower's default, 2)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more fedrec run-config keys")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.client_cpus < 0:
        parser.error(f"--client-cpus must be >= 0, got {args.client_cpus}")
    if bad := [kv for kv in args.set if "=" not in kv or kv.startswith("=")]:
        parser.error(f"--set takes KEY=VALUE, got '{bad[0]}'")
    nodes = load_dataset(DataConfig(dataset=args.dataset)).num_users
    concurrent = bool(args.client_cpus) and (os.cpu_count() or 1) // args.client_cpus > 1
    runs = []
    for rep in range(1, args.repeats + 1):
        print(f"overhead: run {rep}/{args.repeats}", flush=True)
        history, trivial, tuned = one_run(args, nodes)
        runs.append({"fedrec": statistics.median(rates(history, "clients_trained", "seconds_train")),
                     "trivial": statistics.median(rates(trivial, "updates", "seconds")),
                     "trivial_same_switch_interval": statistics.median(rates(tuned, "updates", "seconds")),
                     "fedrec_without_local_work": None if concurrent else statistics.median(overhead_rates(history)),
                     "local_work_ms": 1000 * statistics.median(r["train"]["train-seconds"] for r in history[1:]),
                     "fedrec_rounds": history, "trivial_rounds": trivial, "trivial_same_switch_interval_rounds": tuned})  # fmt: skip
    floats = runs[0]["fedrec_rounds"][-1]["bytes_per_client_each_way"] // 4
    fedrec_rate, trivial_rate, tuned_rate, local_ms = (
        statistics.median(r[k] for r in runs) for k in ("fedrec", "trivial", "trivial_same_switch_interval", "local_work_ms")
    )  # fmt: skip
    overhead_rate = None if concurrent else statistics.median(r["fedrec_without_local_work"] for r in runs)
    report = {
        "provenance": provenance(), "dataset": args.dataset, "supernodes": nodes, "rounds": args.rounds,
        "fraction_train": args.fraction, "client_cpus": args.client_cpus, "set": args.set, "bytes_per_update": floats * 4,
        "fedrec": {"updates_per_second_median": fedrec_rate, "local_work_ms_median": local_ms,
                   "updates_per_second_without_local_work_median": overhead_rate},
        "trivial": {"updates_per_second_median": trivial_rate},
        "trivial_same_switch_interval": {"updates_per_second_median": tuned_rate, "switch_interval_s": SWITCH_INTERVAL},
        "runs": runs, "ratio": fedrec_rate / trivial_rate, "ratio_to_same_switch_interval": fedrec_rate / tuned_rate,
        "ratio_without_local_work": None if overhead_rate is None else overhead_rate / trivial_rate,
    }  # fmt: skip
    p = report["provenance"]
    md = "\n".join([
        "# Client updates per second: fedrec vs a trivial Flower app (same SuperLink, same run)", "",
        *provenance_lines(p), "",
        f"{nodes} SuperNodes (one per {args.dataset} user), {args.fraction:g} of them per round, "
        f"{args.rounds} rounds (the first left out), {floats * 4 / 2**20:.2f} MiB per update each way; "
        f"medians of {args.repeats} runs of each app, alternating; "
        + (f"{args.client_cpus} core(s) per ClientApp." if args.client_cpus else "Flower's default 2 cores per ClientApp."), "",
        "| app | updates/s (median over rounds) |", "|---|---|",
        f"| trivial (echoes the arrays), Flower's defaults | {trivial_rate:.2f} |",
        f"| trivial, with fedrec's GIL switch interval ({SWITCH_INTERVAL * 1000:g} ms) | {tuned_rate:.2f} |",
        f"| fedrec, no DP{''.join(f', {kv}' for kv in args.set)} (one user's local training, {local_ms:.0f} ms a client) | {fedrec_rate:.2f} |",
        *([] if overhead_rate is None else [f"| fedrec, its clients' local work taken out | {overhead_rate:.2f} |"]), "",
        f"Ratio fedrec / trivial: **{report['ratio']:.2f}** (goal: at least 0.5)"
        + ("" if overhead_rate is None else f"; without the local work: **{report['ratio_without_local_work']:.2f}**")
        + f". Against the trivial app with the same switch interval: {report['ratio_to_same_switch_interval']:.2f}.",
    ]) + "\n"  # fmt: skip
    name = "overhead" + (f"-cpus{args.client_cpus}" if args.client_cpus else "")
    write_results(args.out, name + "".join("-" + kv.replace("=", "") for kv in args.set), report, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
