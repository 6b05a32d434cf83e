"""How the public text's neighbours enter the score (#24; validation items only)

    python -m simulations.text_neighbours --checkpoint RUN/round-003 [--bias-weights 1 2] [--consent-fraction 0.1]

A model trained only under DP, with nobody's consent, knows little of which items go together;
the pretrained MiniLM does, from the titles alone, at no privacy cost
(shared/models/text_neighbours.py). This scores a trained checkpoint with the term at each
temperature and weight, two-stage, on the validation items of a seeded sample of users (with
`--consent-fraction`, of the users who did not consent), every row on the same users and
negatives. Test items are not read. The module's constants and the grid's `text-neighbours`
are read off this record.

`--bias-weights` also scores each setting with the item bias weighing more than the towers'
dot product (`item-bias-weight`, shared/models/recommender.py `bias`): towers trained under DP
noise may deserve less trust beside the prior and the term than training gave them. The
grid's setting is the row with the best validation full NDCG@10.

`--prior RUN/popularity_prior.json` (the silos' DP item counts that run started from) adds rows
without the trained towers: the prior alone, then the prior and the term at each setting. What
the checkpoint scores above those rows is what its DP training adds to public text and counts.

Writes simulations/results/text_neighbours.json and .md (or `--report`'s name) with the command,
commit and machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from simulations.checkpoint_study import record_study, sample_users, validation_cells, validation_scores
from simulations.private_recipe import SEED
from simulations.provenance import provenance_lines

if TYPE_CHECKING:
    from shared.data.dataset import Dataset

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained model (a run's round directory)")
    parser.add_argument("--temperatures", nargs="+", type=float, default=[0.05, 0.1, 1.0])
    parser.add_argument("--weights", nargs="+", type=float, default=[10.0, 20.0, 40.0])
    parser.add_argument("--bias-weights", nargs="+", type=float, default=[1.0],
                        help="the item bias's weight in the score (item-bias-weight)")
    parser.add_argument("--consent-fraction", type=float, default=0.0,
                        help="score only the users who did not consent, drawn as the run drew them")
    parser.add_argument("--seed", type=int, default=SEED, help="the consent draw's seed")
    parser.add_argument("--users", type=int, default=2000, help="validation users sampled (seeded)")
    parser.add_argument("--prior", type=Path, default=None,
                        help="a run's popularity_prior.json: also score the prior and the term without the towers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", default="text_neighbours", help="the results files' name")
    args = parser.parse_args(argv)
    if min(args.temperatures) <= 0 or min(args.weights) <= 0 or min(args.bias_weights) <= 0:
        parser.error("temperatures, weights and bias weights must be above 0")
    if args.prior is not None and not args.prior.is_file():
        parser.error(f"--prior {args.prior}: no such file")
    return record_study("text_neighbours", args, run, markdown, report=args.report,
                        consent_fraction=args.consent_fraction, seed=args.seed, users=args.users,
                        prior=None if args.prior is None else str(args.prior))


def run(args: argparse.Namespace) -> list[dict]:
    from shared.config import DataConfig
    from shared.data.consent import consented_users
    from shared.data.dataset import load_dataset
    from shared.errors import FedrecError
    from shared.eval.protocols import sampled_candidates
    from shared.models.checkpoint import check_catalog, load_checkpoint
    from shared.models.score_terms import ScoreTerms
    from shared.models.scoring import ModelScorer
    from shared.models.text_neighbours import TextNeighbours

    dataset = load_dataset(DataConfig(dataset="movielens-1m"))
    model = load_checkpoint(args.checkpoint)
    check_catalog(model, dataset)
    model.config["model"]["text_neighbours"] = 0.0  # each row puts its own term in
    if any(b != 1.0 for b in args.bias_weights) and model.item_bias is None:
        raise FedrecError(f"--bias-weights: {args.checkpoint} has no item bias")
    private = np.arange(dataset.num_users)
    if args.consent_fraction > 0:
        private = np.setdiff1d(private, consented_users(dataset, args.consent_fraction, args.seed))
    users = sample_users(private, args.users, args.seed)
    negatives = sampled_candidates(dataset, "valid", users=users)
    text = model.text.detach().numpy()
    settings = [(w, t) for t in args.temperatures for w in args.weights]
    rows: list[dict] = []
    for bias_weight in args.bias_weights:
        model.config["model"]["item_bias_weight"] = bias_weight
        scorer = ModelScorer(model, dataset, users=users)  # this weight's bias; states once for its rows
        base = scorer.terms  # the checkpoint's own co-occurrences, if any, stay on

        def score(row: dict, term: TextNeighbours | None) -> None:
            scorer.terms = ScoreTerms.of(base, term)
            valid = validation_scores(dataset, scorer.two_stage, users, negatives)
            rows.append({**row, "bias_weight": bias_weight, "valid": valid})
            print(rows[-1], flush=True)

        score({"weight": 0.0}, None)
        for weight, temperature in settings:
            score({"weight": weight, "temperature": temperature}, TextNeighbours(text, weight, temperature=temperature))
    if args.prior is not None:
        prior = PriorScorer(dataset, read_prior(args.prior), model.config["model"]["max_len"])
        for weight, temperature in [(0.0, 0.0), *settings]:
            prior.term = TextNeighbours(text, weight, temperature=temperature) if weight else None
            rows.append({"weight": weight, "temperature": temperature, "towers": False,
                         "valid": validation_scores(dataset, prior, users, negatives)})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def read_prior(path: Path) -> np.ndarray:
    """The item bias a run started from: server.popularity's log prior of its recorded counts."""
    import json

    from server.popularity import SHARPNESS, log_prior
    from shared.errors import FedrecError

    try:
        saved = json.loads(path.read_text())
        counts, noise_std = np.asarray(saved["counts"], dtype=np.float64), float(saved["noise_std"])
        sharpness = float(saved.get("sharpness", SHARPNESS))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FedrecError(f"--prior {path}: not a run's popularity_prior.json ({err})") from None
    return log_prior(counts, noise_std, sharpness)


class PriorScorer:
    """No towers: each item's prior, plus the text term after the user's history when set."""

    def __init__(self, dataset: Dataset, prior: np.ndarray, max_len: int) -> None:
        self.dataset, self.prior, self.max_len = dataset, prior.astype(np.float32), int(max_len)
        self.term = None

    def score_all(self, users: np.ndarray, stage: str) -> np.ndarray:
        from shared.models.batches import eval_histories

        scores = np.broadcast_to(self.prior, (len(users), len(self.prior))).astype(np.float64)
        if self.term is not None:  # the histories as the model reads them: its last max_len items
            scores = scores + self.term.rows(eval_histories(self.dataset, users, stage, self.max_len))
        scores[:, 0] = -np.inf
        return scores


def markdown(record: dict) -> str:
    from shared.models.text_neighbours import RECENT, RECENT_DECAY

    who = ("users (nobody consented)" if not record["consent_fraction"] else
           f"users who did not consent (consent fraction {record['consent_fraction']:g}, seed {record['seed']})")
    lines = ["# The public text's neighbours: temperature and weight (validation items)", "",
             *provenance_lines(record["provenance"]), "",
             f"`{record['checkpoint']}`'s two-stage scores, plus weight x temperature x log sum_k w_k "
             f"exp(cos(h_k, j) / temperature) over the user's last {RECENT} items h_k (w_k proportional to "
             f"{RECENT_DECAY:g}^k, k = 0 the last), on the MiniLM item vectors. ML-1M; validation items of "
             f"{record['users']} sampled {who}, the same for every row. The bias weight multiplies the "
             "item bias in the score (`item-bias-weight`; 1: as trained).", "",
             "| bias weight | weight | temperature | valid full NDCG@10 | valid full HR@10 | valid sampled HR@10 |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for towers in (True, False):
        picked = [r for r in record["rows"] if r.get("towers", True) == towers]
        if not towers and picked:
            lines += ["", f"Without the towers: the item bias the run started from (`{record['prior']}`, the silos' "
                      "DP counts as the server turns them into the bias), plus the term.", "",
                      "| weight | temperature | valid full NDCG@10 | valid full HR@10 | valid sampled HR@10 |",
                      "|---|---|---|---|---|"]  # fmt: skip
        for r in picked:
            alone = "0 (the checkpoint alone) | -" if towers else "0 (the prior alone) | -"
            head = alone if not r["weight"] else f"{r['weight']:g} | {r['temperature']:g}"
            if towers:
                head = f"{r.get('bias_weight', 1.0):g} | {head}"
            lines.append(f"| {head} | {validation_cells(r['valid'])}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
