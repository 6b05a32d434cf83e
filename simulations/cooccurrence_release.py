"""Would the co-occurrences of the users who did not consent add anything, exact or released under
DP on the pairs the consented users already counted? (#24; validation items only)

    python -m simulations.cooccurrence_release --checkpoint outputs/private_recipe/pretrained-c0.1-e15-t

The pretrained model scores with the consented users' co-occurrence table
(shared/models/transitions.py). The other 90% of the users reach the model only through DP
fine-tuning, which adds nothing measurable (docs/private-model.md). This asks where their own
co-occurrences would help, and whether a DP release could carry it:
- the ceiling: their exact counts (same window and gap weights) added to the consented table;
- the same, kept to the consented table's pairs (its support, which the server and every node
  already hold): how much of the ceiling lies in pairs the consented users have seen;
- released on that support by each regional silo, as the popularity counts are
  (client/popularity.py): each user's vector over the support clipped to L2 norm `clip`, summed
  per silo, Gaussian noise at the sigma a node calibrates for the release's epsilon (one
  release, sampling rate 1), summed over the silos, negatives dropped; optionally only the pairs
  whose noisy count clears z noise standard deviations.
Every row scores the pretrained model's two stages with the checkpoint's weight and smoothing on
the validation items of the same seeded sample of users who did not consent. Test items are not
read.

Writes simulations/results/cooccurrence_release.json and .md with the command, commit and machine.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import sparse

from simulations.checkpoint_study import record_study, sample_users, validation_cells, validation_scores
from simulations.private_recipe import SEED
from simulations.provenance import provenance_lines

RESULTS = Path(__file__).parent / "results"
DELTA = 1e-6


def user_pairs(sequences: list[np.ndarray], size: int, window: int, decay: float) -> tuple[np.ndarray, ...]:
    """(row, key, weight) for every windowed pair of each sequence, row = the sequence's index and
    key = i x size + j, summed per (row, key): what each user adds to the table, as
    shared.models.transitions.count_transitions counts it."""
    rows, keys, weights = [], [], []
    for r, s in enumerate(sequences):
        s = np.asarray(s, dtype=np.int64)
        for gap in range(1, min(window, len(s) - 1) + 1):
            keys.append(s[:-gap] * size + s[gap:])
            rows.append(np.full(len(s) - gap, r))
            weights.append(np.full(len(s) - gap, decay ** (gap - 1)))
    row, key, weight = (np.concatenate(x) for x in (rows, keys, weights))
    keep = (key // size > 0) & (key % size > 0)  # padding pairs are never counted
    pairs, inverse = np.unique(np.stack([row[keep], key[keep]]), axis=1, return_inverse=True)
    return pairs[0], pairs[1], np.bincount(inverse.ravel(), weights=weight[keep])


def as_table(keys: np.ndarray, counts: np.ndarray, size: int) -> sparse.csr_matrix:
    table = sparse.csr_matrix((counts.astype(np.float32), (keys // size, keys % size)), shape=(size, size))
    table.sum_duplicates()
    return table


def clipped(rows: np.ndarray, counts: np.ndarray, clip: float) -> np.ndarray:
    """Each row's (user's) counts scaled so that their L2 norm is at most `clip`."""
    norms = np.sqrt(np.bincount(rows, weights=counts**2))
    return counts * np.minimum(1.0, clip / np.maximum(norms, 1e-12))[rows]


def run(args: argparse.Namespace) -> list[dict]:
    from shared.config import DataConfig, PartitionConfig
    from shared.data.consent import non_consented_users
    from shared.data.dataset import load_dataset
    from shared.data.partition import partition_users
    from shared.errors import FedrecError
    from shared.eval.protocols import sampled_candidates
    from shared.models.checkpoint import check_catalog, load_checkpoint
    from shared.models.score_terms import ScoreTerms
    from shared.models.scoring import ModelScorer
    from shared.models.transitions import WINDOW, WINDOW_DECAY, Transitions
    from shared.privacy.accounting import calibrate_sigma

    dataset = load_dataset(DataConfig(dataset="movielens-1m"))
    model = load_checkpoint(args.checkpoint)
    check_catalog(model, dataset)
    consented: Transitions | None = model.transitions
    if consented is None:
        raise FedrecError(f"--checkpoint {args.checkpoint}: no co-occurrence table (train it with --transitions)")
    size = dataset.num_items + 1
    private = non_consented_users(dataset, args.consent_fraction, args.seed)
    silo = partition_users(dataset, PartitionConfig(partitioning="region")).assignment[private]
    print(f"counting the co-occurrences of {len(private)} users who did not consent", flush=True)
    rows, keys, counts = user_pairs([dataset.train_sequence(int(u)) for u in private], size, WINDOW, WINDOW_DECAY)
    support = consented.table.tocoo()
    support_keys = np.sort(support.row.astype(np.int64) * size + support.col)
    on = np.isin(keys, support_keys)

    users = sample_users(private, args.users, args.seed)
    scorer = ModelScorer(model, dataset, users=users)
    others = model.score_terms(with_transitions=False)  # each row tries its own table beside these
    negatives = sampled_candidates(dataset, "valid", users=users)
    out: list[dict] = []

    def score(row: dict, added: sparse.csr_matrix | None) -> None:
        widened = consented if added is None else replace(consented, table=consented.table + added)
        scorer.terms = ScoreTerms.of(widened, others)
        out.append({**row, "valid": validation_scores(dataset, scorer.two_stage, users, negatives)})
        print(out[-1], flush=True)

    score({"added": "nothing (the pretrained model and its consented table)", "pairs": 0}, None)
    score({"added": "exact counts, every pair", "pairs": int(len(np.unique(keys)))}, as_table(keys, counts, size))
    score({"added": "exact counts, on the consented support", "pairs": int(len(np.unique(keys[on])))},
          as_table(keys[on], counts[on], size))
    rng = np.random.default_rng(args.seed + 1)
    index = np.searchsorted(support_keys, keys[on])
    for eps in args.epsilons:
        sigma = calibrate_sigma(eps, DELTA, 1.0, 1)
        for clip in args.clips:
            user_counts = clipped(rows[on], counts[on], clip)
            std = sigma * clip  # per silo; the silos' noises add
            released = np.zeros(len(support_keys))
            for s in np.unique(silo):
                mine = silo[rows[on]] == s
                released += np.bincount(index[mine], weights=user_counts[mine], minlength=len(support_keys))
                released += rng.normal(0.0, std, len(support_keys))
            total_std = std * np.sqrt(len(np.unique(silo)))
            for z in args.z:
                kept = released > max(z * total_std, 0.0)
                score({"added": f"released on the consented support, z {z:g}", "epsilon": eps, "clip": clip,
                       "noise_std": total_std, "pairs": int(kept.sum())},
                      as_table(support_keys[kept], released[kept], size))  # fmt: skip
    return out


def markdown(record: dict) -> str:
    lines = ["# The non-consented users' co-occurrences: exact, and released under DP (validation items)", "",
             *provenance_lines(record["provenance"]), "",
             f"The pretrained model `{record['checkpoint']}` with its consented users' co-occurrence table, and "
             "with the counts of the users who did not consent added to it (same window and gap weights; the "
             "checkpoint's weight and smoothing). A release: each user's vector over the consented table's pairs "
             f"clipped to L2 norm `clip`, summed per regional silo, Gaussian noise per silo calibrated for one "
             f"release at the epsilon (delta {record['delta']:g}), summed over the silos, negatives and counts "
             f"below z noise std's dropped. ML-1M, consent fraction {record['consent_fraction']:g} drawn with seed "
             f"{record['seed']}; validation items of {record['users']} sampled users who did not consent.", "",
             "| added to the consented table | epsilon | clip | noise std (all silos) | pairs | valid full NDCG@10 "
             "| valid full HR@10 | valid sampled HR@10 |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in record["rows"]:
        eps, clip = (f"{r['epsilon']:g}", f"{r['clip']:g}") if "epsilon" in r else ("-", "-")
        std = f"{r['noise_std']:.2f}" if "noise_std" in r else "-"
        lines.append(f"| {r['added']} | {eps} | {clip} | {std} | {r['pairs']:,} | "
                     f"{validation_cells(r['valid'])}")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="pretrained with --transitions")
    parser.add_argument("--consent-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=SEED, help="the consent draw's seed: the pretraining's")
    parser.add_argument("--epsilons", nargs="+", type=float, default=[8.0, 1.0], help="the release's epsilon")
    parser.add_argument("--clips", nargs="+", type=float, default=[1.0, 3.0], help="a user's L2 norm bound")
    parser.add_argument("--z", nargs="+", type=float, default=[0.0, 2.0])
    parser.add_argument("--users", type=int, default=2000, help="validation users sampled (seeded)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    return record_study("cooccurrence_release", args, run, markdown, delta=DELTA,
                        consent_fraction=args.consent_fraction, seed=args.seed, users=args.users)


if __name__ == "__main__":
    raise SystemExit(main())
