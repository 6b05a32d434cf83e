"""How the popularity prior's two constants were chosen (#24): its share of a silo's epsilon, and
how sharply its log counts enter the item bias. On validation items only.

    python -m simulations.popularity_prior --checkpoint RUN/round-003 --epsilons 1 2 4 --sharpness 1 2

With `--keep 0 0.5 --report popularity_prior-pretrained` on the consented pretraining, it asks
whether the silos' counts also refine a bias the pretraining already learned.

The federation's prior (server/popularity.py) is the log of the silos' summed noisy counts. This
replays it offline: each regional silo's clipped counts exactly as a node computes them
(client/popularity.py), Gaussian noise at the sigma a node calibrates for each epsilon, then the
prior at each sharpness put into a trained model's item bias in place of the one it has. (A
federation trained under DP moves that bias little, so the model's other scores stay as
trained.) The exact counts, without noise, are the ceiling. Every row is scored on the
validation items of the same sampled users; test items are not read.

Writes simulations/results/popularity_prior.json and .md with the command, commit and machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from shared.errors import FedrecError
from simulations.checkpoint_study import record_study, sample_users
from simulations.provenance import provenance_lines

RESULTS = Path(__file__).parent / "results"
DELTA = 1e-6


def silo_counts(dataset, partitioning: str = "region") -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """Each silo's clipped item counts, as its node computes them before noising."""
    from client.data import LocalData
    from client.popularity import clipped_counts
    from shared.config import PartitionConfig
    from shared.data.partition import partition_users

    part = partition_users(dataset, PartitionConfig(partitioning=partitioning))
    return [clipped_counts(LocalData(dataset, part.users(p), p, partitioning)) for p in range(part.num_partitions)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained regional model with an item bias")
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 2.0, 4.0], help="the release's epsilon")
    parser.add_argument("--sharpness", nargs="+", type=float, default=[1.0, 2.0])
    parser.add_argument("--keep", nargs="+", type=float, default=[0.0],
                        help="share of the checkpoint's own bias kept beside the prior (0: replaced, as "
                             "from scratch; above 0: a pretrained bias the prior refines)")
    parser.add_argument("--users", type=int, default=2000, help="validation users sampled (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", default="popularity_prior", help="the results files' name")
    args = parser.parse_args(argv)
    return record_study("popularity_prior", args, run, markdown, report=args.report, delta=DELTA)


def run(args: argparse.Namespace) -> list[dict]:
    import torch

    from server.popularity import log_prior
    from shared.config import DataConfig
    from shared.data.dataset import load_dataset
    from shared.models.checkpoint import load_checkpoint
    from shared.models.training import evaluate_model
    from shared.privacy.accounting import calibrate_sigma

    dataset = load_dataset(DataConfig(dataset="movielens-1m"))
    model = load_checkpoint(args.checkpoint)
    if model.item_bias is None:
        raise FedrecError(f"--checkpoint {args.checkpoint}: the model has no item bias (use-item-bias=false)")
    silos = silo_counts(dataset)
    users = sample_users(np.arange(dataset.num_users), args.users, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    priors: list[tuple[float | None, float, np.ndarray, float]] = []  # (epsilon, sigma, counts, noise std)
    for eps in args.epsilons:
        sigma = calibrate_sigma(eps, DELTA, 1.0, 1)
        noisy = sum(c + rng.normal(0.0, sigma, c.shape) for c in silos)
        priors.append((eps, sigma, noisy, sigma * np.sqrt(len(silos))))
    priors.append((None, 0.0, sum(silos), 1.0))  # exact counts (+1, as a floor): the ceiling
    own = model.item_bias.weight[:, 0].detach().clone().double().numpy()
    rows = []

    def score(row: dict, bias: np.ndarray) -> None:
        with torch.no_grad():
            model.item_bias.weight[:, 0] = torch.as_tensor(bias, dtype=torch.float32)
        result = evaluate_model(model, dataset, "valid", users=users)["ranking"]
        row["valid"] = {f"{p}-{m}": float(result[p][m]) for p in ("full", "sampled") for m in ("hr@10", "ndcg@10")}
        rows.append(row)
        print(row, flush=True)

    if any(k > 0 for k in args.keep):
        score({"epsilon": "own", "sigma_per_silo": 0.0, "sharpness": 0.0, "keep": 1.0}, own)
    for eps, sigma, counts, std in priors:
        for sharp in args.sharpness:
            for keep in args.keep:
                score({"epsilon": eps, "sigma_per_silo": sigma, "sharpness": sharp, "keep": keep},
                      keep * own + (1.0 - keep) * sharp * log_prior(counts, std))
    return rows


def markdown(record: dict) -> str:
    lines = ["# The popularity prior's share of epsilon and sharpness (validation items)", "",
             *provenance_lines(record["provenance"]), "",
             f"The prior replayed into `{record['checkpoint']}`'s item bias (10 regional silos, ML-1M, delta "
             f"{record['delta']:g}, replace-one); validation items of the same sampled users for every row.", "",
             "| release epsilon | sigma per silo | sharpness | own bias kept | valid full NDCG@10 | valid full HR@10 "
             "| valid sampled HR@10 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in record["rows"]:
        v, eps = r["valid"], r["epsilon"]
        eps = "exact counts" if eps is None else "(the checkpoint's own)" if eps == "own" else f"{eps:g}"
        lines.append(f"| {eps} | {r['sigma_per_silo']:.2f} | {r['sharpness']:g} | {r.get('keep', 0.0):g} "
                     f"| {v['full-ndcg@10']:.4f} | {v['full-hr@10']:.4f} | {v['sampled-hr@10']:.4f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
