"""Milliseconds of one one-user client's local training, in a plain process (no Flower).

    python -m simulations.client_step [--dataset movielens-100k] [--users 300] [--repeats 3] \\
        [--name client_step]

What a simulated one-client-per-user node does per message, less the federation: load the
global weights, then `local_fit` (one epoch over the user's one sequence, no DP) on one torch
thread, as a client actor runs it. Each repeat is one pass over the same random users, each
user once, from the same starting weights; a repeat's number is the median over its users, and
the record's is the median over repeats. The overhead benchmark's clients do this inside Flower,
where the step also competes with Flower's own work; this runner times the step alone, so two
commits can be compared by running it in each (`--name` keeps both records).
Writes simulations/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from client.data import LocalData
from client.training import local_examples, local_fit
from shared.config import DataConfig, ModelConfig, TrainConfig
from shared.data.dataset import load_dataset
from shared.data.sources import default_cache_dir
from shared.models.params import flat_trainable, load_flat
from shared.models.training import build_model
from simulations.provenance import provenance, provenance_lines, write_results

RESULTS = Path(__file__).parent / "results"
WARMUP_USERS = 20


def one_pass_ms(model, clients, data, start: torch.Tensor, cfg: TrainConfig) -> list[float]:  # type: ignore[no-untyped-def]
    """Each client's local_fit in milliseconds, the global weights loaded before each."""
    times = []
    for local, examples in zip(clients, data):
        load_flat(model, start)
        began = time.perf_counter()
        local_fit(model, local, examples, cfg, server_round=1)
        times.append(1000 * (time.perf_counter() - began))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--users", type=int, default=300, help="random users timed, each once a repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="client_step", help="results file name (without extension)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.users < 1 or args.repeats < 1:
        raise SystemExit("client_step: error: --users and --repeats must be at least 1")
    torch.set_num_threads(1)  # a simulated client actor's one thread
    dataset = load_dataset(DataConfig(dataset=args.dataset))
    model = build_model(dataset, ModelConfig(use_id_embedding=False), default_cache_dir())
    cfg = TrainConfig(epochs=1, device="cpu")
    start = flat_trainable(model).clone()
    users = np.random.default_rng(0).permutation(dataset.num_users)[: args.users]
    clients = [LocalData(dataset, np.array([u]), int(u), "user") for u in users]
    data = [local_examples(model, local, "user") for local in clients]
    one_pass_ms(model, clients[:WARMUP_USERS], data[:WARMUP_USERS], start, cfg)
    medians = []
    for repeat in range(args.repeats):
        medians.append(statistics.median(one_pass_ms(model, clients, data, start, cfg)))
        print(f"repeat {repeat + 1}/{args.repeats}: median {medians[-1]:.2f} ms per client", flush=True)
    report = {"provenance": provenance(), "dataset": args.dataset, "users": len(users),
              "repeats": args.repeats, "median_ms_per_repeat": medians,
              "median_ms": statistics.median(medians)}  # fmt: skip
    lines = [f"# One-user client step, plain process ({args.dataset})", "", *provenance_lines(report["provenance"]), "",
             f"local_fit of one user (one epoch, no DP, the text-only item tower, 1 torch thread), "
             f"{len(users)} random users each once per repeat, from the same weights.", "",
             f"Median ms per client: **{report['median_ms']:.2f}** (repeats: "
             f"{', '.join(f'{m:.2f}' for m in medians)})."]  # fmt: skip
    write_results(args.out, args.name, report, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
