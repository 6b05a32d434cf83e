"""`fedrec catalog build`: a federation's public catalog from item metadata alone;
`fedrec catalog info`: what a catalog directory holds and its fingerprint."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.data.sources import DATASETS


def register(commands: argparse._SubParsersAction) -> None:
    catalog = commands.add_parser("catalog", help="the public item catalog a federation shares")
    sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="build it from item metadata alone (no user, no interaction)")
    build.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}")
    build.add_argument("--path", default="", help="directory holding the item file (default: the cache)")
    build.add_argument("--cache-dir", default="", help="download cache (default ~/.cache/fedrec)")
    build.add_argument("--text-columns", default="",
                       help="item columns the item text is built from (default: every string column but item_id)")  # fmt: skip
    build.add_argument("--user-schema", type=Path, default=None,
                       help="csv: the user-feature schema file (default: PATH/user-schema.json if present)")  # fmt: skip
    build.add_argument("--out", type=Path, required=True, help="the catalog directory to create")
    build.set_defaults(run=run_build)
    info = sub.add_parser("info", help="items, genres, user features and fingerprint of a catalog")
    info.add_argument("directory", type=Path)
    info.set_defaults(run=run_info)


def _describe(catalog) -> str:  # type: ignore[no-untyped-def]
    features = ", ".join(f"{k} ({len(v) - 1})" for k, v in catalog.user_feature_vocab.items()) or "none"
    return (f"catalog of {catalog.name}: {catalog.num_items:,} items, {len(catalog.genre_names)} genres, "
            f"user features: {features}; fingerprint {catalog.fingerprint}")  # fmt: skip


def run_build(args: argparse.Namespace) -> int:
    from shared.data.public_catalog import build_catalog, save_catalog

    text_cols = [c.strip() for c in args.text_columns.split(",") if c.strip()]
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else None
    catalog, source = build_catalog(args.dataset, args.path, cache, text_cols, args.user_schema)
    save_catalog(catalog, args.out, source, text_cols)
    print(f"{_describe(catalog)} (from {source}) -> {args.out}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from shared.data.public_catalog import load_catalog

    print(_describe(load_catalog(args.directory)))
    return 0
