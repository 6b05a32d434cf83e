"""Whether the private fine-tuning would help more if it moved the model further (#24; validation
items only).

    python -m simulations.step_scale --checkpoint PRETRAINED --finetuned RUN/round-003 ... --scales 0 1 3 10

The grid's fine-tuned rows sit within noise of the model they started from, at every epsilon
(paired_gain.md). Two explanations predict different things. If the server's noise or the small
step were what held them back, the fine-tuning's direction would still be good, and going further
along it would raise the scores; if the direction itself adds nothing the pretrained model lacks,
going further would lower them. Each row scores pretrained + s x (fine-tuned - pretrained): s = 0
is the start, s = 1 the fine-tuned model, s > 1 a server step s times larger (the noise scaled
with it, as a server learning rate would scale it). Two-stage scores, the checkpoint's
co-occurrences on, on the validation items of a seeded sample of the users who did not consent,
the same users and negatives for every row. Test items are not read.

Writes simulations/results/step_scale.json and .md with the command, commit and machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from shared.errors import FedrecError
from simulations.checkpoint_study import record_study, sample_users, validation_cells, validation_scores
from simulations.private_recipe import SEED
from simulations.provenance import provenance_lines

RESULTS = Path(__file__).parent / "results"


def scaled_state(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """start + scale x (end - start) for every floating-point tensor; the rest (integer buffers)
    as in `start`. A model that does not match `start`'s names and shapes is refused."""
    if start.keys() != end.keys() or any(start[k].shape != end[k].shape for k in start):
        raise FedrecError("the fine-tuned model's parameters differ from the pretrained one's in name or shape")
    return {k: start[k] + scale * (end[k] - start[k]) if start[k].dtype.is_floating_point else start[k] for k in start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the pretrained model the runs started from")
    parser.add_argument("--finetuned", type=Path, nargs="+", required=True, help="fine-tuned round directories")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 3.0, 10.0])
    parser.add_argument("--consent-fraction", type=float, default=0.1, help="score only the users who did not consent")
    parser.add_argument("--seed", type=int, default=SEED, help="the consent draw's seed")
    parser.add_argument("--users", type=int, default=2000, help="validation users sampled (seeded)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if missing := [p for p in args.finetuned if not (p / "model.safetensors").is_file()]:
        parser.error(f"--finetuned {missing[0]}: no model.safetensors there")
    return record_study("step_scale", args, run, markdown, consent_fraction=args.consent_fraction,
                        users=args.users, finetuned=[str(p) for p in args.finetuned])  # fmt: skip


def run(args: argparse.Namespace) -> list[dict]:
    from shared.config import DataConfig
    from shared.data.consent import non_consented_users
    from shared.data.dataset import load_dataset
    from shared.eval.protocols import sampled_candidates
    from shared.models.checkpoint import check_catalog, load_checkpoint
    from shared.models.scoring import ModelScorer

    dataset = load_dataset(DataConfig(dataset="movielens-1m"))
    model = load_checkpoint(args.checkpoint)
    check_catalog(model, dataset)
    users = sample_users(non_consented_users(dataset, args.consent_fraction, args.seed), args.users, args.seed)
    negatives = sampled_candidates(dataset, "valid", users=users)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    rows: list[dict] = []
    for path in args.finetuned:
        end = load_checkpoint(path).state_dict()
        step = torch.sqrt(sum(((end[k] - start[k]).double() ** 2).sum() for k in start if start[k].dtype.is_floating_point))
        for scale in args.scales:
            model.load_state_dict(scaled_state(start, end, scale))
            valid = validation_scores(dataset, ModelScorer(model, dataset, users=users).two_stage, users, negatives)
            rows.append({"finetuned": str(path), "step_norm": float(step), "scale": scale, "valid": valid})
            print(rows[-1], flush=True)
    return rows


def markdown(record: dict) -> str:
    lines = ["# A larger step along the private fine-tuning (validation items)", "",
             *provenance_lines(record["provenance"]), "",
             f"pretrained + scale x (fine-tuned - pretrained), from `{record['checkpoint']}`; two-stage scores on "
             f"the validation items of {record['users']} sampled users who did not consent (consent fraction "
             f"{record['consent_fraction']:g}), the same for every row. Scale 0: the pretrained model; 1: the "
             "fine-tuned one; above 1: a server step that many times larger, noise included.", "",
             "| fine-tuned | its step's L2 norm | scale | valid full NDCG@10 | valid full HR@10 | valid sampled HR@10 |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in record["rows"]:
        lines.append(f"| `{r['finetuned']}` | {r['step_norm']:.3f} | {r['scale']:g} | {validation_cells(r['valid'])}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
