"""Time of one local DP-SGD step against a plain step, same model, same batches.

    python -m simulations.dp_step [--dataset movielens-1m] [--repeats 30] [--device auto]

A "step" is what a client does per batch: the forward pass of the joint loss (with the ranker's
candidate search), backward, and the optimizer step. DP adds per-example gradients, clipping and
noise. Opacus grad-sample modes compared: hooks (the default) and functorch. Ghost clipping is
not among them: it needs the loss as `criterion(output, target)`, and the joint retrieval +
ranking loss samples its own negatives inside the model. Batches come from a random sample of
ML-1M users the size of a region (user-level unit), Poisson-sampled at a client's rate. Writes
simulations/results/dp_step-<device>.json, .md and .png; timings are medians over `--repeats` steps
after warm-up, and the ratios divide medians measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer

from shared.config import DataConfig, ModelConfig, TrainConfig
from shared.data.dataset import load_dataset
from shared.data.sources import default_cache_dir
from shared.models.batches import base_batch, training_sequences
from shared.models.training import build_model
from simulations.provenance import provenance, write_results

RESULTS = Path(__file__).parent / "results"
WARMUP = 3


def time_steps(mode: str, dataset, users, device: str, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    model = build_model(dataset, ModelConfig(), default_cache_dir()).to(device).train()
    cfg = TrainConfig()
    data = training_sequences(dataset, users, int(model.config["model"]["max_len"]))
    q = cfg.batch_size / len(data)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    stepped: torch.nn.Module = model
    if mode != "plain":
        stepped = GradSampleModule(model, force_functorch=(mode == "dp-functorch"))
        optimizer = DPOptimizer(optimizer, noise_multiplier=1.0, max_grad_norm=1.0,
                                expected_batch_size=cfg.batch_size)  # fmt: skip
    rng = np.random.default_rng(0)  # the same batches for every mode
    times = []
    for i in range(WARMUP + repeats):
        rows = np.flatnonzero(rng.random(len(data)) < q)
        batch = {k: v.to(device) for k, v in base_batch(data, rows, model.text.shape[0] - 1, cfg, rng).items()}
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        stepped(batch)["loss"].mean().backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens-1m")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--users", type=int, default=600, help="a regional node's size (ML-1M: 600 per region)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = TrainConfig(device=args.device).resolved_device()
    dataset = load_dataset(DataConfig(dataset=args.dataset))
    users = np.sort(np.random.default_rng(0).choice(dataset.num_users, args.users, replace=False))
    rows = {}
    for mode in ("plain", "dp-hooks", "dp-functorch"):
        times = time_steps(mode, dataset, users, device, args.repeats)
        rows[mode] = {"median_ms": 1000 * statistics.median(times), "p90_ms": 1000 * float(np.percentile(times, 90))}
        print(f"{mode}: median {rows[mode]['median_ms']:.1f} ms/step", flush=True)
    for mode in ("dp-hooks", "dp-functorch"):
        rows[mode]["ratio_to_plain"] = rows[mode]["median_ms"] / rows["plain"]["median_ms"]
    report = {"provenance": provenance(), "device": device, "repeats": args.repeats,
              "batch_size": TrainConfig().batch_size, "users": len(users), "steps": rows}  # fmt: skip
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else ""
    lines = [f"# DP-SGD step time vs plain step ({device}{', ' + gpu if gpu else ''})", "",
             f"Command: `{report['provenance']['command']}`  ", f"Commit: `{report['provenance']['commit']}`  ",
             f"Machine: {report['provenance']['machine']}  ",
             f"Median of {args.repeats} steps after {WARMUP} warm-up steps; batches Poisson-sampled "
             f"(expected size {TrainConfig().batch_size}) from {len(users)} random ML-1M users (a region's size).", "",
             "| mode | median ms/step | p90 ms/step | ratio to plain (medians) |", "|---|---|---|---|"]  # fmt: skip
    for mode, r in rows.items():
        lines.append(f"| {mode} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r.get('ratio_to_plain', 1.0):.2f} |")
    write_results(args.out, f"dp_step-{device}", report, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
