"""Could the silos release which item follows which, under user-level DP? (#24; validation only)

    python -m simulations.transition_prior --checkpoint outputs/private_recipe/pretrained-c0.1-e15

ML-1M is strongly sequential: the item a user rated last says much about the next. The model
pretrained on the consented 10% learned that from their data alone; the other 90% reach it only
through DP fine-tuning, which moves it little (docs/private-model.md). This asks whether a
first-order transition count, released once by each silo as the popularity counts are
(client/popularity.py), would carry that signal instead:
- each non-consented user's (item, next item) pairs of their training history, counted, the
  vector scaled to L2 norm at most 1 (one user moves the sum by at most 1), summed per regional
  silo, Gaussian noise at the sigma a node calibrates for the release's epsilon, summed over
  the silos;
- its log, row-centred, added with weight beta to the pretrained model's retrieval scores after
  the user's last training item; either dense (every pair), or only the pairs whose noisy count
  clears z noise standard deviations (a sparse release of the strong pairs);
- the exact counts, without noise, are the ceiling.
Scored on the validation items of the same sampled non-consented users; test items are not read.

Writes simulations/results/transition_prior.json and .md with the command, commit and machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from simulations.private_recipe import SEED
from simulations.checkpoint_study import record_study, sample_users, validation_cells, validation_scores
from simulations.provenance import provenance_lines

RESULTS = Path(__file__).parent / "results"
DELTA = 1e-6


def user_transitions(sequence: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sources, targets, weights): a user's distinct (item, next item) pairs, their counts
    scaled so that the vector of all of them has L2 norm at most 1."""
    pairs, counts = np.unique(np.stack([sequence[:-1], sequence[1:]]), axis=1, return_counts=True)
    weights = counts / max(1.0, float(np.linalg.norm(counts)))
    return pairs[0], pairs[1], weights


def silo_transitions(dataset, silos: list[np.ndarray]) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """Each silo's (I+1, I+1) float32 sum of its users' clipped transition counts."""
    out = []
    for users in silos:
        counts = np.zeros((dataset.num_items + 1, dataset.num_items + 1), dtype=np.float32)
        for user in users:
            src, dst, w = user_transitions(dataset.train_sequence(int(user)))
            np.add.at(counts, (src, dst), w.astype(np.float32))
        out.append(counts)
    return out


def dense_prior(counts: np.ndarray, noise_std: float) -> np.ndarray:
    """log(count + noise std + 1/2), each row centred over the items; 0 for the padding item."""
    prior = np.log(np.maximum(counts, 0.0) + noise_std + 0.5)
    prior -= prior[:, 1:].mean(1, keepdims=True)
    prior[:, 0] = 0.0
    return prior


def sparse_prior(counts: np.ndarray, noise_std: float, z: float) -> np.ndarray:
    """log(count / threshold) where the noisy count clears z noise std's, 0 elsewhere."""
    threshold = z * max(noise_std, 1e-6)
    prior = np.where(counts > threshold, np.log(np.maximum(counts, threshold) / threshold), 0.0)
    prior[:, 0] = 0.0
    return prior.astype(np.float32)


class WithTransitions:
    """A scorer: the model's retrieval scores plus beta x prior[the user's last item]."""

    def __init__(self, base, dataset, prior: np.ndarray | None, beta: float) -> None:  # type: ignore[no-untyped-def]
        self.base, self.dataset, self.prior, self.beta = base, dataset, prior, beta

    def score_all(self, users: np.ndarray, stage: str) -> np.ndarray:
        scores = self.base.score_all(users, stage)
        if self.prior is not None:
            last = np.array([self.dataset.history(int(u), stage)[-1] for u in users])
            scores = scores + self.beta * self.prior[last]
        return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the model pretrained on consented users")
    parser.add_argument("--consent-fraction", type=float, default=0.1)
    parser.add_argument("--epsilons", nargs="+", type=float, default=[8.0, 4.0], help="the release's epsilon")
    parser.add_argument("--betas", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    parser.add_argument("--z", type=float, default=3.0, help="the sparse release keeps counts above z noise std's")
    parser.add_argument("--users", type=int, default=2000, help="validation users sampled (seeded)")
    parser.add_argument("--seed", type=int, default=SEED, help="the consent draw's seed: the pretraining's")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    return record_study("transition_prior", args, run, markdown, delta=DELTA,
                        consent_fraction=args.consent_fraction, z=args.z)


def run(args: argparse.Namespace) -> list[dict]:
    from shared.config import DataConfig, PartitionConfig
    from shared.data.consent import non_consented_users
    from shared.data.dataset import load_dataset
    from shared.data.partition import partition_users
    from shared.models.checkpoint import check_catalog, load_checkpoint
    from shared.models.scoring import ModelScorer
    from shared.privacy.accounting import calibrate_sigma

    dataset = load_dataset(DataConfig(dataset="movielens-1m"))
    model = load_checkpoint(args.checkpoint)
    check_catalog(model, dataset)
    private = non_consented_users(dataset, args.consent_fraction, args.seed)
    part = partition_users(dataset, PartitionConfig(partitioning="region"))
    silos = [np.intersect1d(part.users(p), private) for p in range(part.num_partitions)]
    print(f"counting the transitions of {len(private)} users in {len(silos)} silos", flush=True)
    per_silo = silo_transitions(dataset, silos)
    exact = np.sum(per_silo, axis=0)
    users = sample_users(private, args.users, args.seed)
    base = ModelScorer(model, dataset, users=users).retrieval
    rows: list[dict] = []

    def score(row: dict, prior: np.ndarray | None, beta: float) -> None:
        scorer = WithTransitions(base, dataset, prior, beta)
        rows.append({**row, "beta": beta, "valid": validation_scores(dataset, scorer, users)})
        print(rows[-1], flush=True)

    score({"release": "none (the pretrained model)", "epsilon": None}, None, 0.0)
    rng = np.random.default_rng(args.seed + 1)
    releases = [(None, 0.0, exact)]
    for eps in args.epsilons:
        sigma = calibrate_sigma(eps, DELTA, 1.0, 1)
        noisy = np.sum([c + rng.normal(0.0, sigma, c.shape).astype(np.float32) for c in per_silo], axis=0)
        releases.append((eps, sigma * np.sqrt(len(silos)), noisy))
    for eps, std, counts in releases:
        strong = int((counts > args.z * max(std, 1e-6)).sum()) if eps is not None else None
        for name, prior in (("dense", dense_prior(counts, std)), ("sparse", sparse_prior(counts, std, args.z))):
            if eps is None and name == "sparse":
                continue  # without noise every pair is kept: the dense row
            for beta in args.betas:
                score({"release": name, "epsilon": eps, "noise_std": std, "pairs_kept": strong if name == "sparse"
                       else None}, prior, beta)  # fmt: skip
    return rows


def markdown(record: dict) -> str:
    lines = ["# A DP transition prior released by the silos (validation items)", "",
             *provenance_lines(record["provenance"]), "",
             f"The pretrained model `{record['checkpoint']}`'s retrieval scores, plus beta x the released "
             f"log transition counts after each user's last training item (10 regional silos of the users who "
             f"did not consent, consent fraction {record['consent_fraction']:g}, ML-1M, delta {record['delta']:g}, "
             f"replace-one; the sparse release keeps counts above {record['z']:g} noise std's). Validation items "
             "of the same sampled non-consented users for every row.", "",
             "| release | epsilon | noise std (summed) | pairs kept | beta | valid full NDCG@10 | valid full HR@10 "
             "| valid sampled HR@10 |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in record["rows"]:
        eps = "-" if r["release"].startswith("none") else "exact" if r["epsilon"] is None else f"{r['epsilon']:g}"
        std = f"{r['noise_std']:.2f}" if r.get("noise_std") else "-"
        kept = "-" if r.get("pairs_kept") is None else str(r["pairs_kept"])
        lines.append(f"| {r['release']} | {eps} | {std} | {kept} | {r['beta']:g} | "
                     f"{validation_cells(r['valid'])}")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
