"""`fedrec evaluate`: a baseline or a checkpoint through the shared harness, both protocols."""

from __future__ import annotations

import argparse

from shared.cli.options import add_data_options, data_config, emit_json, table
from shared.data.dataset import STAGES, load_dataset
from shared.errors import FedrecError
from shared.eval.protocols import evaluate
from shared.models.popularity import Popularity

BASELINES = ("popularity",)


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser("evaluate", help="HR, NDCG and MRR under both protocols")
    add_data_options(cmd)
    what = cmd.add_mutually_exclusive_group(required=True)
    what.add_argument("--baseline", choices=BASELINES, help="evaluate a baseline")
    what.add_argument("--checkpoint", help="evaluate a trained model directory")
    cmd.add_argument("--stage", choices=STAGES, default="test", help="which held-out item")
    cmd.add_argument("-k", type=int, default=10, help="cut-off for HR and NDCG (baselines)")
    cmd.add_argument("--device", default="auto", help="auto, cpu or cuda (checkpoints)")
    cmd.add_argument("--json", default="", help="write the metrics as JSON (- for stdout)")
    cmd.set_defaults(run=run)


def format_metrics(results: dict[str, dict[str, float]]) -> str:
    keys = list(next(iter(results.values())))
    rows = [[protocol, *(f"{m[k]:.4f}" for k in keys)] for protocol, m in results.items()]
    return table(rows, ["protocol", *keys])


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise FedrecError(f"-k must be at least 1, got {args.k}")
    if args.checkpoint:
        return run_checkpoint(args)
    dataset = load_dataset(data_config(args))
    results = evaluate(dataset, Popularity.fit(dataset), args.stage, ks=(args.k,))
    print(f"{args.baseline} on {dataset.name} ({args.stage}, {dataset.num_users:,} users)")
    print(format_metrics(results))
    emit_json(results, args.json)
    return 0


def run_checkpoint(args: argparse.Namespace) -> int:
    # Imported here so that evaluating a baseline does not pay for importing torch.
    from shared.cli.train import metrics_table
    from shared.config import TrainConfig
    from shared.models.checkpoint import check_catalog, load_checkpoint
    from shared.models.training import evaluate_model

    model = load_checkpoint(args.checkpoint)
    dataset = load_dataset(data_config(args))
    check_catalog(model, dataset)
    device = TrainConfig(device=args.device).resolved_device()
    results = evaluate_model(model, dataset, args.stage, device)
    print(f"{args.checkpoint} on {dataset.name} ({args.stage}, {dataset.num_users:,} users); "
          f"retrieval recall@100 {results['retrieval']['full']['recall@100']:.4f}")  # fmt: skip
    print(metrics_table(results))
    emit_json(results, args.json)
    return 0
