"""`fedrec train`: the centralized, non-private reference model."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from cli.options import add_data_options, data_config, table
from shared.config import RETRIEVAL_LOSSES, ModelConfig, TrainConfig
from shared.errors import FedrecError

log = logging.getLogger(__name__)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    d = ModelConfig()
    group = parser.add_argument_group("model")
    group.add_argument("--dim", type=int, default=d.dim)
    group.add_argument("--num-layers", type=int, default=d.num_layers)
    group.add_argument("--num-heads", type=int, default=d.num_heads)
    group.add_argument("--max-len", type=int, default=d.max_len, help="history length read")
    group.add_argument("--dropout", type=float, default=d.dropout)
    group.add_argument("--no-text", action="store_true", help="item tower without text")
    group.add_argument("--no-id-embedding", action="store_true",
                       help="item tower from text alone (cold-start items)")  # fmt: skip
    group.add_argument("--item-bias", action="store_true",
                       help="a per-item bias: the popularity prior (run config use-item-bias)")  # fmt: skip
    group.add_argument("--retrieve-top-n", type=int, default=d.retrieve_top_n)
    group.add_argument("--retrieval-loss", default=d.retrieval_loss, choices=RETRIEVAL_LOSSES,
                       help="softmax: cross-entropy over the sampled negatives; bce: each on its own")  # fmt: skip
    group.add_argument("--text-finetune-layers", type=int, default=d.text_finetune_layers,
                       help="fine-tune the top N MiniLM layers (slow on CPU)")  # fmt: skip


def add_train_options(parser: argparse.ArgumentParser) -> None:
    t = TrainConfig()
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=t.epochs)
    group.add_argument("--batch-size", type=int, default=t.batch_size)
    group.add_argument("--lr", type=float, default=t.lr)
    group.add_argument("--weight-decay", type=float, default=t.weight_decay)
    group.add_argument("--optimizer", default=t.optimizer, help="adamw or sgd")
    group.add_argument("--num-negatives", type=int, default=t.num_negatives)
    group.add_argument("--patience", type=int, default=t.patience)
    group.add_argument("--seed", type=int, default=t.seed)
    group.add_argument("--device", default=t.device, help="auto, cpu or cuda")


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(
        dim=args.dim, num_layers=args.num_layers, num_heads=args.num_heads, max_len=args.max_len,
        dropout=args.dropout, use_text=not args.no_text, use_id_embedding=not args.no_id_embedding,
        retrieve_top_n=args.retrieve_top_n, text_finetune_layers=args.text_finetune_layers,
        use_item_bias=args.item_bias, retrieval_loss=args.retrieval_loss,
    )  # fmt: skip


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, optimizer=args.optimizer, num_negatives=args.num_negatives,
        patience=args.patience, seed=args.seed, device=args.device,
    )  # fmt: skip


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser("train", help="train the centralized (non-private) reference")
    add_data_options(cmd)
    add_model_options(cmd)
    add_train_options(cmd)
    cmd.add_argument("--output", required=True, help="checkpoint directory to write")
    cmd.add_argument("--consented-only", action="store_true",
                     help="train on the users who consented to central use only: the server's "
                          "pretraining for a federation (run config pretrained=OUTPUT)")  # fmt: skip
    cmd.add_argument("--transitions", action="store_true",
                     help="also count which items came soon after which in the training users' histories, and "
                          "add their log counts after each user's last items to every score, weighted as "
                          "their validation items choose (shared/models/transitions.py)")  # fmt: skip
    cmd.set_defaults(run=run)


def attach_transitions(model, dataset, users) -> list[dict]:  # type: ignore[no-untyped-def]
    """Count the training users' co-occurrences and keep them on `model` with the constants their
    validation items choose (none, when no setting helps); the settings tried, as rows."""
    import numpy as np

    from shared.models.transitions import count_transitions, tune

    users = np.arange(dataset.num_users) if users is None else users
    counted = count_transitions([dataset.train_sequence(int(u)) for u in users], dataset.num_items)
    chosen, rows = tune(model, dataset, users, counted)
    model.transitions = chosen
    print("transitions: " + ("none helps on validation" if chosen is None else
                             f"weight {chosen.weight:g}, smoothing {chosen.smoothing:g}, "
                             f"{counted.table.nnz:,} pairs"))  # fmt: skip
    return rows


TABLE_METRICS = ("hr@10", "ndcg@10", "mrr", "precision@10", "recall@10", "f1@10")


def metrics_table(results: dict) -> str:
    rows = []
    for stage, protocols in results.items():
        for protocol, m in protocols.items():
            # Blank where a metrics.json written before precision/recall/F1 were reported lacks them.
            rows.append([stage, protocol, *(f"{m[k]:.4f}" if k in m else "" for k in TABLE_METRICS)])
    return table(rows, ["stage", "protocol", *TABLE_METRICS])


def run(args: argparse.Namespace) -> int:
    # Imported here: `fedrec` parses every sub-command's options, and torch takes seconds to
    # import, which every other command (a node's `deploy supernode`, say) would pay.
    from shared.data.consent import consented_users
    from shared.data.dataset import load_dataset
    from shared.data.sources import default_cache_dir
    from shared.models.checkpoint import save_checkpoint
    from shared.models.training import build_model, evaluate_model, fit

    data_cfg = data_config(args)
    model_cfg, train_cfg = model_config(args), train_config(args)
    dataset = load_dataset(data_cfg)
    cache = data_cfg.cache_path or default_cache_dir()
    model = build_model(dataset, model_cfg, cache)
    users = None
    if args.consented_only:
        users = consented_users(dataset, data_cfg.consent_fraction, train_cfg.seed)
        if not len(users):
            raise FedrecError("--consented-only: no user consented (give --consent-fraction, or a consent "
                              "column in users.csv)")  # fmt: skip
        print(f"training on the {len(users):,} of {dataset.num_users:,} users who consented")
    start = time.perf_counter()
    history = fit(model, dataset, train_cfg, users=users)
    seconds = time.perf_counter() - start
    device = train_cfg.resolved_device()
    tuning = attach_transitions(model.cpu(), dataset, users) if args.transitions else None
    test = evaluate_model(model, dataset, "test", device, users=users)
    best = max(history, key=lambda r: r["valid"]["ranking"]["full"]["ndcg@10"])
    metrics = {
        "dataset": dataset.name, "epochs_run": len(history), "best_epoch": best["epoch"],
        "train_seconds": seconds, "seconds_per_epoch": seconds / max(len(history), 1),
        "test": test, "valid": best["valid"], "history": history,
        "users": "consented" if users is not None else "all",
        **({"transitions": tuning} if tuning is not None else {}),
    }  # fmt: skip
    save_checkpoint(model.cpu(), Path(args.output), metrics)
    print(f"trained on {dataset.name}: {len(history)} epochs, best epoch {best['epoch']}, "
          f"{metrics['seconds_per_epoch']:.1f} s/epoch")  # fmt: skip
    print(metrics_table(test))
    print(f"checkpoint written to {args.output}")
    return 0
