"""`fedrec search "QUERY"`: the catalog's items closest to a text query, personalised for a user
(or a typed history) when one is given (shared.models.search says how)."""

from __future__ import annotations

import argparse

from cli.options import table
from cli.recommend import add_user_options, user_or_history
from shared.config import TrainConfig
from shared.errors import FedrecError
from shared.models.search_defaults import CANDIDATES, PERSONAL_WEIGHT


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser("search", help="items matching a text query, optionally personalised")
    cmd.add_argument("query", help='what to look for: "Toy Story", "a heist film in Paris"')
    cmd.add_argument("--checkpoint", required=True, help="trained model directory")
    add_user_options(cmd, required=False)
    cmd.add_argument("-k", type=int, default=10)
    cmd.add_argument("--weight", type=float, default=PERSONAL_WEIGHT,
                     help="the user's score's weight against the query's (1) in the personalised blend")  # fmt: skip
    cmd.add_argument("--candidates", type=int, default=CANDIDATES,
                     help="items closest to the query that the user's model re-scores")  # fmt: skip
    cmd.add_argument("--device", default="auto")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.query.strip():
        raise FedrecError("search: the query is empty")
    if args.k < 1:
        raise FedrecError(f"-k must be at least 1, got {args.k}")
    if args.candidates < 1:
        raise FedrecError(f"--candidates must be at least 1, got {args.candidates}")
    from shared.models.checkpoint import load_checkpoint  # the model stack: see cli/recommend.py
    from shared.models.scoring import ModelScorer
    from shared.models.search import Searcher

    model = load_checkpoint(args.checkpoint)
    personal = args.user is not None or args.history is not None
    history, features = (user_or_history(args, model)[:2]) if personal else (None, None)
    device = TrainConfig(device=args.device).resolved_device()
    scorer = ModelScorer(model, device=device) if personal else None
    searcher = Searcher(model, scorer, weight=args.weight, candidates=args.candidates)
    hits = searcher.search(args.query, args.k, history, features)
    rows = [[str(n), h.title, h.item_id, f"{h.score:.3f}", f"{h.text_score:.3f}",
             "" if h.personal_score is None else f"{h.personal_score:.3f}"] for n, h in enumerate(hits, 1)]  # fmt: skip
    print(table(rows, ["#", "title", "item", "score", "text", "personal"]))
    return 0
