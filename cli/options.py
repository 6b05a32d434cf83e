"""Command-line options shared by several sub-commands, and their dataclass configs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shared.atomic import write_json
from shared.config import PARTITIONINGS, DataConfig, PartitionConfig
from shared.data.sources import DATASETS


def add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}")
    group.add_argument("--path", default="", help="directory holding the dataset's files")
    group.add_argument("--cache-dir", default="", help="download cache (default ~/.cache/fedrec)")
    group.add_argument("--min-interactions", type=int, default=5, help="drop shorter users")
    group.add_argument("--rating-threshold", type=float, default=0.0,
                       help="ratings below this are not interactions")  # fmt: skip
    group.add_argument("--text-columns", default="",
                       help="item columns the item text is built from, e.g. title,author,publisher "
                            "(default: every string column but item_id)")  # fmt: skip
    group.add_argument("--consent-fraction", type=float, default=0.0,
                       help="share of users who consented to central use, drawn with --seed "
                            "(users.csv's consent column decides when present)")  # fmt: skip


def add_partition_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("partitioning")
    group.add_argument("--partitioning", choices=PARTITIONINGS, default=None)
    group.add_argument("--num-partitions", type=int, default=0)
    group.add_argument("--dirichlet-alpha", type=float, default=0.5)
    group.add_argument("--seed", type=int, default=42)


def data_config(args: argparse.Namespace) -> DataConfig:
    return DataConfig(
        dataset=args.dataset,
        data_path=args.path,
        cache_dir=args.cache_dir,
        min_interactions=args.min_interactions,
        rating_threshold=args.rating_threshold,
        text_columns=args.text_columns,
        consent_fraction=args.consent_fraction,
    )


def partition_config(args: argparse.Namespace) -> PartitionConfig:
    return PartitionConfig(
        partitioning=args.partitioning,
        num_partitions=args.num_partitions,
        dirichlet_alpha=args.dirichlet_alpha,
        seed=args.seed,
    )


def emit_json(obj: Any, path: str | None) -> None:
    """Write `obj` atomically to `path`; '-' means stdout."""
    if not path:
        return
    if path == "-":
        json.dump(obj, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        write_json(Path(path), obj)


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table that reads well in a terminal and pastes into Markdown."""
    cells = [header, *rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])
