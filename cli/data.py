"""`fedrec data info`: what a dataset holds after preprocessing, and how it partitions;
`fedrec data export-partition`: one node's share of it, as the directory an edge node reads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from cli.options import (
    add_data_options,
    add_partition_options,
    data_config,
    emit_json,
    partition_config,
    table,
)
from shared.data.dataset import Dataset, load_dataset
from shared.errors import FedrecError


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="inspect datasets")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    info = sub.add_parser("info", help="users, items, interactions, splits and partitions")
    add_data_options(info)
    add_partition_options(info)
    info.add_argument("--json", default="", help="also write the numbers as JSON (- for stdout)")
    info.set_defaults(run=run_info)
    export = sub.add_parser("export-partition", help="write one node's private data as a csv directory")
    add_data_options(export)
    add_partition_options(export)
    export.add_argument("--partition-id", type=int, required=True)
    export.add_argument("--out", type=Path, required=True, help="the node's data directory (must not exist)")
    export.set_defaults(run=run_export)


def describe(dataset: Dataset) -> dict[str, Any]:
    s = dataset.stats
    lengths = np.diff(dataset.offsets)
    return {
        "dataset": dataset.name,
        "raw": {"users": s.raw_users, "items": s.raw_items, "interactions": s.raw_interactions},
        "dropped": {
            "below_rating_threshold": s.below_threshold,
            "users_too_few_interactions": s.dropped_users,
            "their_interactions": s.dropped_interactions,
        },
        "users": dataset.num_users,
        "items": dataset.num_items,
        "interactions": dataset.num_interactions,
        "density": dataset.num_interactions / (dataset.num_users * dataset.num_items),
        "sequence_length": {
            "min": int(lengths.min()), "median": float(np.median(lengths)),
            "max": int(lengths.max()),
        },  # fmt: skip
        "split": {
            "train": int(dataset.train_mask.sum()),
            "valid": dataset.num_users,
            "test": dataset.num_users,
        },
        "user_features": sorted(dataset.user_features),
        "genres": len(dataset.genre_names),
    }


def run_info(args: argparse.Namespace) -> int:
    config = data_config(args)
    part_config = partition_config(args) if args.partitioning else None
    dataset = load_dataset(config)
    info = describe(dataset)
    s = dataset.stats
    print(f"dataset {dataset.name}")
    print(table(
        [["users", f"{s.raw_users:,}", f"{dataset.num_users:,}"],
         ["items", f"{s.raw_items:,}", f"{dataset.num_items:,}"],
         ["interactions", f"{s.raw_interactions:,}", f"{dataset.num_interactions:,}"],
         ["density", "", f"{info['density']:.4%}"]],
        ["", "before filtering", "after filtering"],
    ))  # fmt: skip
    print(f"split (leave-one-out): train {int(dataset.train_mask.sum()):,}, "
          f"valid {dataset.num_users:,}, test {dataset.num_users:,} interactions")  # fmt: skip
    if s.dropped_users:
        print(f"dropped {s.dropped_users:,} users with fewer than {config.min_interactions} "
              f"interactions ({s.dropped_interactions:,} interactions)")  # fmt: skip
    if part_config:
        from shared.data.partition import partition_users  # pulls in HF datasets: ~2 s

        stats = partition_users(dataset, part_config).stats(dataset)
        info["partitioning"] = stats
        print(f"partitioning {stats['scheme']}: {stats['num_partitions']:,} partitions")
        spread = [[name, *(f"{stats[name][k]:,}" for k in ("min", "median", "max"))]
                  for name in ("users", "interactions")]  # fmt: skip
        print(table(spread, ["per partition", "min", "median", "max"]))
        if stats["num_partitions"] <= 50:
            rows = [[p["id"], p["label"], f"{p['users']:,}", f"{p['interactions']:,}"]
                    for p in stats["partitions"]]  # fmt: skip
            print(table(rows, ["id", "label", "users", "interactions"]))
    emit_json(info, args.json)
    return 0


def run_export(args: argparse.Namespace) -> int:
    if not args.partitioning:
        raise FedrecError("export-partition needs --partitioning (and --num-partitions where it applies)")
    from shared.data.export import export_users
    from shared.data.partition import partition_users

    dataset = load_dataset(data_config(args))
    users = partition_users(dataset, partition_config(args)).users(args.partition_id)
    counts = export_users(dataset, users, args.out)
    print(f"partition {args.partition_id} of {args.partitioning}: {counts['users']:,} users, "
          f"{counts['interactions']:,} interactions, {counts['items']:,} items -> {args.out}")  # fmt: skip
    return 0
