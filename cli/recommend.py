"""`fedrec recommend`: top-k titles for a known user or for a history typed on the command line,
each explained on request (`--explain`: the history items and side features that drove it)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cli.options import table
from shared.config import DataConfig, TrainConfig
from shared.errors import FedrecError

# The model stack (torch) is imported where a command runs, not here: `fedrec` parses every
# sub-command's options, and every other command would pay seconds for it.
if TYPE_CHECKING:
    import numpy as np

    from shared.data.dataset import Dataset
    from shared.models.recommender import Recommender
    from shared.models.scoring import ModelScorer

EXPLAIN_TOP = 3  # history items listed per recommended item


def add_user_options(cmd: argparse.ArgumentParser, required: bool) -> None:
    """--user or --history, and where a --user's data is; shared with `fedrec search`."""
    who = cmd.add_mutually_exclusive_group(required=required)
    who.add_argument("--user", help="a user id of the dataset")
    who.add_argument("--history", help='a new user\'s items, oldest first: "item,item,...", '
                     'each a catalog id or a title (exact or close)')  # fmt: skip
    cmd.add_argument("--dataset", default="", help="for --user (default: the checkpoint's)")
    cmd.add_argument("--path", default="", help="dataset directory")
    cmd.add_argument("--cache-dir", default="")


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser("recommend", help="top-k items for one user")
    cmd.add_argument("--checkpoint", required=True, help="trained model directory")
    add_user_options(cmd, required=True)
    cmd.add_argument("-k", type=int, default=10)
    cmd.add_argument("--explain", action="store_true",
                     help="list, for each item, the history items and side features that drove its score "
                          "(Integrated Gradients)")  # fmt: skip
    cmd.add_argument("--explain-top", type=int, default=EXPLAIN_TOP, help="history items listed per item")
    cmd.add_argument("--device", default="auto")
    cmd.set_defaults(run=run)


def user_or_history(args: argparse.Namespace, model: Recommender) -> tuple[np.ndarray, np.ndarray, Dataset | None]:
    """(history item indices, side-feature codes, the dataset when --user needed it)."""
    import numpy as np

    from shared.data.dataset import load_dataset
    from shared.models.checkpoint import check_catalog
    from shared.models.item_names import ItemNames
    from shared.models.recommend import cold_features, user_inputs

    if args.history is not None:
        names = ItemNames(model.config["catalog"], model.config["titles"])
        return np.array(names.resolve(args.history), dtype=np.int64), cold_features(model), None
    config = DataConfig(dataset=args.dataset or model.config["dataset"],
                        data_path=args.path, cache_dir=args.cache_dir)  # fmt: skip
    dataset = load_dataset(config)
    check_catalog(model, dataset)
    history, features = user_inputs(dataset, args.user)
    return history, features, dataset


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise FedrecError(f"-k must be at least 1, got {args.k}")
    if args.explain_top < 1:
        raise FedrecError(f"--explain-top must be at least 1, got {args.explain_top}")
    from shared.models.checkpoint import load_checkpoint
    from shared.models.recommend import feature_values, to_recommendations
    from shared.models.scoring import ModelScorer

    model = load_checkpoint(args.checkpoint)
    device = TrainConfig(device=args.device).resolved_device()
    history, features, dataset = user_or_history(args, model)
    scorer = ModelScorer(model, device=device)
    ranked = scorer.recommend(history, features, args.k)
    recs = to_recommendations(model, ranked)
    print(table([[str(n), r.title, r.item_id, f"{r.score:.3f}"] for n, r in enumerate(recs, 1)],
                ["#", "title", "item", "score"]))  # fmt: skip
    if args.explain:
        print(explanations_text(model, scorer, history, features, [i for i, _ in ranked],
                                feature_values(dataset, args.user, model), args.explain_top))  # fmt: skip
    return 0


def explanations_text(
    model: Recommender, scorer: ModelScorer, history: np.ndarray, features: np.ndarray, items: list[int],
    values: list[str], top: int,
) -> str:  # fmt: skip
    """One paragraph per item: its top history items and every side feature, with their shares
    of the item's score."""
    from shared.models.explain import Explainer  # captum is imported only when asked for

    titles = model.config["titles"]
    lines = ["", "Why (Integrated Gradients: each input's share of the item's score, + raised it, - lowered it):"]
    for n, e in enumerate(Explainer(model, scorer).explain(history, features, items), 1):
        drove = ", ".join(f"{titles[i - 1]} {a:+.3f}" for i, a in e.top_history(top)) or "none raised it"
        lines.append(f"{n:>2}. {titles[e.item - 1]} (score {e.score:.3f})")
        lines.append(f"    history: {drove}")
        if e.features:
            lines.append("    features: " + ", ".join(f"{name}={v} {a:+.3f}" for (name, a), v in zip(e.features, values)))
    return "\n".join(lines)
