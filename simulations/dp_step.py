"""Time and memory of one local DP-SGD step against a plain step, same model, same batches.

    python -m simulations.dp_step [--dataset movielens-1m] [--repeats 30] [--device auto]
                                  [--batch-size 32] [--modes plain,dp-hooks,dp-functorch,dp-ghost]

A "step" is what a client does per batch: the forward pass of the joint loss (with the ranker's
candidate search), backward, and the optimizer step, with the optimizer a client builds. DP adds
per-example clipping and noise, built as a client builds them (client/training.py's dp_sgd:
secure-mode noise from an OS-seeded generator). Grad-sample modes compared: hooks (per-example
gradients, the default), functorch (the same, all through torch.func) and ghost (two backward
passes, per-example gradient norms only: client/ghost.py). Batches come from a random sample of
ML-1M users the size of a region (user-level unit), Poisson-sampled at a client's rate for the
expected `--batch-size`. Writes simulations/results/dp_step-<device>.json, .md and .png
(dp_step-<device>-b<size> for another batch size); timings are medians over `--repeats` steps
after warm-up, the ratios divide medians measured in the same run, and on CUDA the peak memory
is torch's largest allocation during the timed steps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer

from client.privacy import RoundPlan
from client.training import dp_sgd
from shared.config import DataConfig, ModelConfig, TrainConfig
from shared.data.dataset import load_dataset
from shared.data.sources import default_cache_dir
from shared.errors import FedrecError
from shared.models.batches import base_batch, training_sequences
from shared.models.training import build_model, make_optimizer
from simulations.provenance import provenance, write_results

RESULTS = Path(__file__).parent / "results"
WARMUP = 3
MODES = ("plain", "dp-hooks", "dp-functorch", "dp-ghost")


def time_steps(mode: str, dataset, users, device: str, repeats: int, batch_size: int) -> tuple[list[float], int | None]:  # type: ignore[no-untyped-def]
    """Seconds of each timed step, and on CUDA the peak bytes allocated during them."""
    model = build_model(dataset, ModelConfig(), default_cache_dir()).to(device).train()
    cfg = TrainConfig(batch_size=batch_size)
    data = training_sequences(dataset, users, int(model.config["model"]["max_len"]))
    q = min(1.0, cfg.batch_size / len(data))
    optimizer = make_optimizer(model, cfg)
    stepped: torch.nn.Module = model
    backward = None
    if mode == "dp-functorch":  # not a client's option: the hooks mode's kwargs, every layer by torch.func
        stepped = GradSampleModule(model, force_functorch=True)
        noise = torch.Generator(device=device).manual_seed(0)
        optimizer = DPOptimizer(optimizer, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=cfg.batch_size,
                                generator=noise, secure_mode=True)  # fmt: skip
    elif mode != "plain":
        plan = RoundPlan(1.0, q, 1, 1.0, grad_sample_mode=mode.removeprefix("dp-"))
        stepped, optimizer, backward = dp_sgd(model, optimizer, plan, cfg.batch_size, device)
    rng = np.random.default_rng(0)  # the same batches for every mode
    times = []
    for i in range(WARMUP + repeats):
        rows = np.flatnonzero(rng.random(len(data)) < q)
        batch = {k: v.to(device) for k, v in base_batch(data, rows, model.text.shape[0] - 1, cfg, rng).items()}
        if device == "cuda":
            torch.cuda.synchronize()
            if i == WARMUP:
                torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        losses = stepped(batch)["loss"]
        if backward:
            backward(losses)
        else:
            losses.mean().backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    if stepped is not model:
        stepped._close()  # type: ignore[operator]
    return times, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens-1m")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--users", type=int, default=600, help="a regional node's size (ML-1M: 600 per region)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig().batch_size,
                        help="expected (Poisson) batch size, sequences")  # fmt: skip
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or "plain" not in modes or args.batch_size < 1:
        print(f"dp_step: --modes must name 'plain' and only {', '.join(MODES)} (got {args.modes}), "
              f"--batch-size >= 1 (got {args.batch_size})", file=sys.stderr)  # fmt: skip
        return 2
    try:
        device = TrainConfig(device=args.device).resolved_device()
        dataset = load_dataset(DataConfig(dataset=args.dataset))
    except FedrecError as err:
        print(f"dp_step: {err}", file=sys.stderr)
        return 2
    # Opacus's hooks on layers whose inputs need no gradient (the embeddings): as in local_fit.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    users = np.sort(np.random.default_rng(0).choice(dataset.num_users, min(args.users, dataset.num_users), replace=False))
    rows = {}
    for mode in modes:
        times, peak = time_steps(mode, dataset, users, device, args.repeats, args.batch_size)
        rows[mode] = {"median_ms": 1000 * statistics.median(times), "p90_ms": 1000 * float(np.percentile(times, 90)),
                      "peak_mib": None if peak is None else peak / 2**20}  # fmt: skip
        print(f"{mode}: median {rows[mode]['median_ms']:.1f} ms/step", flush=True)
    for mode in modes:
        if mode != "plain":
            rows[mode]["ratio_to_plain"] = rows[mode]["median_ms"] / rows["plain"]["median_ms"]
    report = {"provenance": provenance(), "device": device, "repeats": args.repeats,
              "batch_size": args.batch_size, "users": len(users), "steps": rows}  # fmt: skip
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else ""
    lines = [f"# DP-SGD step time vs plain step ({device}{', ' + gpu if gpu else ''})", "",
             f"Command: `{report['provenance']['command']}`  ", f"Commit: `{report['provenance']['commit']}`  ",
             f"Machine: {report['provenance']['machine']}  ",
             f"Median of {args.repeats} steps after {WARMUP} warm-up steps; batches Poisson-sampled "
             f"(expected size {args.batch_size}) from {len(users)} random {args.dataset} users (a region's size). "
             "Peak memory: torch's largest CUDA allocation during the timed steps (not measured on CPU).", "",
             "| mode | median ms/step | p90 ms/step | ratio to plain (medians) | peak MiB |", "|---|---|---|---|---|"]  # fmt: skip
    for mode, r in rows.items():
        peak_mib = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(f"| {mode} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r.get('ratio_to_plain', 1.0):.2f} | {peak_mib} |")
    name = f"dp_step-{device}" + ("" if args.batch_size == TrainConfig().batch_size else f"-b{args.batch_size}")
    write_results(args.out, name, report, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
