"""`fedrec evaluate`: a baseline or a checkpoint through the shared harness, both protocols."""

from __future__ import annotations

import argparse

import numpy as np

from cli.options import add_data_options, data_config, emit_json, table
from shared.data.consent import consented_users
from shared.data.dataset import STAGES, Dataset, load_dataset
from shared.errors import FedrecError
from shared.eval.protocols import evaluate
from shared.models.popularity import Popularity

BASELINES = ("popularity",)
USER_SETS = ("all", "consented", "non-consented")


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser("evaluate", help="HR, NDCG, MRR, precision, recall and F1 under both protocols")
    add_data_options(cmd)
    what = cmd.add_mutually_exclusive_group(required=True)
    what.add_argument("--baseline", choices=BASELINES, help="evaluate a baseline")
    what.add_argument("--checkpoint", help="evaluate a trained model directory")
    cmd.add_argument("--stage", choices=STAGES, default="test", help="which held-out item")
    cmd.add_argument("-k", type=int, default=10, help="cut-off for HR and NDCG (baselines)")
    cmd.add_argument("--device", default="auto", help="auto, cpu or cuda (checkpoints)")
    cmd.add_argument("--users", choices=USER_SETS, default="all",
                     help="whose held-out items: everyone, or those who did (not) consent to central "
                          "use (--consent-fraction with --seed, or users.csv's consent column)")  # fmt: skip
    cmd.add_argument("--seed", type=int, default=42, help="draws --consent-fraction's users")
    cmd.add_argument("--json", default="", help="write the metrics as JSON (- for stdout)")
    cmd.set_defaults(run=run)


def chosen_users(args: argparse.Namespace, dataset: Dataset) -> np.ndarray | None:
    """The users --users names (None: all). A private model is judged on the users whose data
    reached it only through DP, apart from those the server pretrained on."""
    if args.users == "all":
        return None
    consented = consented_users(dataset, args.consent_fraction, args.seed)
    users = consented if args.users == "consented" else np.setdiff1d(np.arange(dataset.num_users), consented)
    if not len(users):
        raise FedrecError(f"--users {args.users}: no such user (give --consent-fraction, or a consent column)")
    return users


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
    users = chosen_users(args, dataset)
    results = evaluate(dataset, Popularity.fit(dataset), args.stage, ks=(args.k,), users=users)
    count = dataset.num_users if users is None else len(users)
    print(f"{args.baseline} on {dataset.name} ({args.stage}, {count:,} users: {args.users})")
    print(format_metrics(results))
    emit_json(results, args.json)
    return 0


def run_checkpoint(args: argparse.Namespace) -> int:
    # Imported here so that evaluating a baseline does not pay for importing torch.
    from cli.train import metrics_table
    from shared.config import TrainConfig
    from shared.models.checkpoint import check_catalog, load_checkpoint
    from shared.models.training import evaluate_model

    model = load_checkpoint(args.checkpoint)
    dataset = load_dataset(data_config(args))
    check_catalog(model, dataset)
    device = TrainConfig(device=args.device).resolved_device()
    users = chosen_users(args, dataset)
    results = evaluate_model(model, dataset, args.stage, device, users=users)
    count = dataset.num_users if users is None else len(users)
    print(f"{args.checkpoint} on {dataset.name} ({args.stage}, {count:,} users: {args.users}); "
          f"retrieval recall@100 {results['retrieval']['full']['recall@100']:.4f}")  # fmt: skip
    print(metrics_table(results))
    emit_json(results, args.json)
    return 0
