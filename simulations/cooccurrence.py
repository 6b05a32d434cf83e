"""Which co-occurrences of the consented users to count, and how many of a user's last items vote
(#24; validation items only)

    python -m simulations.cooccurrence --checkpoint outputs/private_recipe/pretrained-c0.1-e15

The server counts, in the consented users' training histories, how often item j came soon after
item i, and adds a log of those counts after a user's last items to every score
(shared/models/transitions.py). This chooses its structural constants: the counting window (j at
most `window` items after i, each further gap weighted `window decay` more) and how many of the
user's last items vote (`recent`, each further back weighted `recent decay` more). Each setting
is scored with the pretrained model's retrieval stage on the validation items of a seeded sample
of the users who did not consent, at weights 2 and 4 (smoothing 0.5); `fedrec train
--transitions` then chooses weight and smoothing on the consented users' own validation items.
Test items are not read.

Writes simulations/results/cooccurrence.json and .md with the command, commit and machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from simulations.private_recipe import SEED
from simulations.checkpoint_study import record_study, sample_users, validation_cells, validation_scores
from simulations.provenance import provenance_lines

RESULTS = Path(__file__).parent / "results"
# (window, window decay, recent, recent decay): the next item after the last only (the first
# recipe), then wider windows and more voting items.
SETTINGS = [(1, 1.0, 1, 1.0), (1, 1.0, 20, 0.8), (5, 0.7, 10, 0.7), (5, 0.7, 20, 0.8), (10, 0.8, 20, 0.8),
            (10, 0.8, 50, 0.9), (10, 0.9, 50, 0.9)]  # fmt: skip
WEIGHTS = (2.0, 4.0)
SMOOTHING = 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the model pretrained on consented users")
    parser.add_argument("--consent-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=SEED, help="the consent draw's seed: the pretraining's")
    parser.add_argument("--users", type=int, default=2000, help="validation users sampled (seeded)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    return record_study("cooccurrence", args, run, markdown, consent_fraction=args.consent_fraction,
                        seed=args.seed, users=args.users, smoothing=SMOOTHING)


def run(args: argparse.Namespace) -> list[dict]:
    from shared.config import DataConfig
    from shared.data.consent import consented_users
    from shared.data.dataset import load_dataset
    from shared.eval.protocols import sampled_candidates
    from shared.models.checkpoint import check_catalog, load_checkpoint
    from shared.models.score_terms import ScoreTerms
    from shared.models.scoring import ModelScorer
    from shared.models.transitions import Transitions, count_transitions

    dataset = load_dataset(DataConfig(dataset="movielens-1m"))
    model = load_checkpoint(args.checkpoint)
    check_catalog(model, dataset)
    consented = consented_users(dataset, args.consent_fraction, args.seed)
    private = np.setdiff1d(np.arange(dataset.num_users), consented)
    users = sample_users(private, args.users, args.seed)
    scorer = ModelScorer(model, dataset, users=users)
    others = model.score_terms(with_transitions=False)  # each row tries its own table beside these
    negatives = sampled_candidates(dataset, "valid", users=users)
    histories = [dataset.train_sequence(int(u)) for u in consented]
    rows: list[dict] = []

    def score(row: dict, table: Transitions | None) -> None:
        scorer.terms = ScoreTerms.of(table, others)
        rows.append({**row, "valid": validation_scores(dataset, scorer.retrieval, users, negatives)})
        print(rows[-1], flush=True)

    print(f"{len(consented)} consented users counted; {len(users)} who did not consent scored", flush=True)
    score({"window": 0}, None)
    for window, window_decay, recent, recent_decay in SETTINGS:
        counted = count_transitions(histories, dataset.num_items, window, window_decay)
        for weight in WEIGHTS:
            table = Transitions(counted.table, weight, SMOOTHING, recent, recent_decay)
            score({"window": window, "window_decay": window_decay, "recent": recent, "recent_decay": recent_decay,
                   "weight": weight, "pairs": int(counted.table.nnz)}, table)  # fmt: skip
    return rows


def markdown(record: dict) -> str:
    lines = ["# The consented users' co-occurrences: window and voting items (validation items)", "",
             *provenance_lines(record["provenance"]), "",
             f"The pretrained model `{record['checkpoint']}`'s retrieval scores, plus weight x the sum over the "
             f"user's last `recent` items (each further back x `recent decay`) of log(1 + count / "
             f"{record['smoothing']:g}), the counts of the consented users' training pairs (i, j) with j at most "
             f"`window` items after i (each further gap x `window decay`). ML-1M, consent fraction "
             f"{record['consent_fraction']:g} drawn with seed {record['seed']} (the pretraining's); validation items "
             f"of {record['users']} sampled users who did not consent, for every row.", "",
             "| window | window decay | recent | recent decay | weight | pairs counted | valid full NDCG@10 "
             "| valid full HR@10 | valid sampled HR@10 |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in record["rows"]:
        if r["window"] == 0:
            head = "none (the pretrained model) | - | - | - | - | -"
        else:
            head = (f"{r['window']} | {r['window_decay']:g} | {r['recent']} | {r['recent_decay']:g} | "
                    f"{r['weight']:g} | {r['pairs']:,}")  # fmt: skip
        lines.append(f"| {head} | {validation_cells(r['valid'])}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
