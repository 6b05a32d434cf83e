"""`fedrec recommend`: top-k titles for a known user or for a history typed on the command line."""

from __future__ import annotations

import argparse

from shared.cli.options import table
from shared.config import DataConfig, TrainConfig
from shared.data.dataset import load_dataset
from shared.errors import FedrecError
from shared.models.checkpoint import check_catalog, load_checkpoint
from shared.models.recommend import parse_history, recommend_for_history, recommend_for_user


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser("recommend", help="top-k items for one user")
    cmd.add_argument("--checkpoint", required=True, help="trained model directory")
    who = cmd.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user id of the dataset")
    who.add_argument("--history", help='a new user\'s items, oldest first: "item,item,..."')
    cmd.add_argument("-k", type=int, default=10)
    cmd.add_argument("--dataset", default="", help="for --user (default: the checkpoint's)")
    cmd.add_argument("--path", default="", help="dataset directory")
    cmd.add_argument("--cache-dir", default="")
    cmd.add_argument("--device", default="auto")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise FedrecError(f"-k must be at least 1, got {args.k}")
    model = load_checkpoint(args.checkpoint)
    device = TrainConfig(device=args.device).resolved_device()
    if args.history is not None:
        history = parse_history(args.history, model.config["catalog"])
        recs = recommend_for_history(model, history, args.k, device)
    else:
        config = DataConfig(dataset=args.dataset or model.config["dataset"],
                            data_path=args.path, cache_dir=args.cache_dir)  # fmt: skip
        dataset = load_dataset(config)
        check_catalog(model, dataset)
        recs = recommend_for_user(model, dataset, args.user, args.k, device)
    print(table([[str(n), r.title, r.item_id, f"{r.score:.3f}"] for n, r in enumerate(recs, 1)],
                ["#", "title", "item", "score"]))  # fmt: skip
    return 0
