"""How the public text's neighbours enter the score (#24; validation items only)

    python -m simulations.text_neighbours --checkpoint RUN/round-003 [--consent-fraction 0.1]

A model trained only under DP, with nobody's consent, knows little of which items go together;
the pretrained MiniLM does, from the titles alone, at no privacy cost
(shared/models/text_neighbours.py). This scores a trained checkpoint with the term at each
temperature and weight, two-stage, on the validation items of a seeded sample of users (with
`--consent-fraction`, of the users who did not consent), every row on the same users and
negatives. Test items are not read. The module's constants and the grid's `text-neighbours`
are read off this record.

Writes simulations/results/text_neighbours.json and .md (or `--report`'s name) with the command,
commit and machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from simulations.checkpoint_study import record_study, sample_users, validation_cells, validation_scores
from simulations.private_recipe import SEED
from simulations.provenance import provenance_lines

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained model (a run's round directory)")
    parser.add_argument("--temperatures", nargs="+", type=float, default=[0.05, 0.1, 1.0])
    parser.add_argument("--weights", nargs="+", type=float, default=[10.0, 20.0, 40.0])
    parser.add_argument("--consent-fraction", type=float, default=0.0,
                        help="score only the users who did not consent, drawn as the run drew them")
    parser.add_argument("--seed", type=int, default=SEED, help="the consent draw's seed")
    parser.add_argument("--users", type=int, default=2000, help="validation users sampled (seeded)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", default="text_neighbours", help="the results files' name")
    args = parser.parse_args(argv)
    if min(args.temperatures) <= 0 or min(args.weights) <= 0:
        parser.error("temperatures and weights must be above 0")
    return record_study("text_neighbours", args, run, markdown, report=args.report,
                        consent_fraction=args.consent_fraction, seed=args.seed, users=args.users)


def run(args: argparse.Namespace) -> list[dict]:
    from shared.config import DataConfig
    from shared.data.consent import consented_users
    from shared.data.dataset import load_dataset
    from shared.eval.protocols import sampled_candidates
    from shared.models.checkpoint import check_catalog, load_checkpoint
    from shared.models.score_terms import ScoreTerms
    from shared.models.scoring import ModelScorer
    from shared.models.text_neighbours import TextNeighbours

    dataset = load_dataset(DataConfig(dataset="movielens-1m"))
    model = load_checkpoint(args.checkpoint)
    check_catalog(model, dataset)
    model.config["model"]["text_neighbours"] = 0.0  # each row puts its own term in
    private = np.arange(dataset.num_users)
    if args.consent_fraction > 0:
        private = np.setdiff1d(private, consented_users(dataset, args.consent_fraction, args.seed))
    users = sample_users(private, args.users, args.seed)
    scorer = ModelScorer(model, dataset, users=users)  # user states computed once, for every row
    base = scorer.terms  # the checkpoint's own co-occurrences, if any, stay on
    negatives = sampled_candidates(dataset, "valid", users=users)
    text = model.text.detach().numpy()
    rows: list[dict] = []

    def score(row: dict, term: TextNeighbours | None) -> None:
        scorer.terms = ScoreTerms.of(base, term)
        rows.append({**row, "valid": validation_scores(dataset, scorer.two_stage, users, negatives)})
        print(rows[-1], flush=True)

    score({"weight": 0.0}, None)
    for temperature in args.temperatures:
        for weight in args.weights:
            score({"weight": weight, "temperature": temperature}, TextNeighbours(text, weight, temperature=temperature))
    return rows


def markdown(record: dict) -> str:
    from shared.models.text_neighbours import RECENT, RECENT_DECAY

    who = ("all users" if not record["consent_fraction"] else
           f"users who did not consent (consent fraction {record['consent_fraction']:g}, seed {record['seed']})")
    lines = ["# The public text's neighbours: temperature and weight (validation items)", "",
             *provenance_lines(record["provenance"]), "",
             f"`{record['checkpoint']}`'s two-stage scores, plus weight x temperature x log sum_k w_k "
             f"exp(cos(h_k, j) / temperature) over the user's last {RECENT} items h_k (w_k proportional to "
             f"{RECENT_DECAY:g}^k, k = 0 the last), on the MiniLM item vectors. ML-1M; validation items of "
             f"{record['users']} sampled {who}, the same for every row.", "",
             "| weight | temperature | valid full NDCG@10 | valid full HR@10 | valid sampled HR@10 |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in record["rows"]:
        head = "0 (the checkpoint alone) | -" if not r["weight"] else f"{r['weight']:g} | {r['temperature']:g}"
        lines.append(f"| {head} | {validation_cells(r['valid'])}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
