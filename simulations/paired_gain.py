"""Does a fine-tuned model beat the model it started from, on the same users, beyond chance? (#24)

    python -m simulations.paired_gain --base outputs/private_recipe/pretrained-c0.1-e15-t --grid \\
        [--tuned NAME=CHECKPOINT_OR_RUN_DIR ...]

#24 asks every private row to beat the model pretrained on the consented users alone, on the
same users who did not consent. The two means differ by less than either moves between runs, so
comparing them is not enough: this scores both models on the same users' test items, takes each
user's difference (tuned minus base) in HR@10 and NDCG@10 under both protocols, and reports the
mean difference with a 95% bootstrap interval over users. A row beats its start when the
interval's lower end is above 0 for the metric; the interval says how large the gain can be.
It is conditional on the two trained models: another training run of the same recipe (other DP
noise) moves the gain too, so a recipe is judged on its repeats, each paired with its start.

Only test items are read, and nothing is chosen on them: the models were fixed before. A
`--tuned` directory may be a checkpoint or a `fedrec simulate` run directory (its test round);
`--grid` adds every point of the privacy-utility grid that started from `--base`.

Writes simulations/results/paired_gain.json and .md with the command, commit and machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from simulations.checkpoint_study import record_study
from simulations.private_recipe import SEED
from simulations.provenance import provenance_lines

RESULTS = Path(__file__).parent / "results"
PROTOCOLS = ("full", "sampled")
METRICS = ("hr@10", "ndcg@10")


def checkpoint_of(name: str, path: Path) -> Path:
    """`path` itself when it holds weights, else the test round of the `fedrec simulate` run
    directory it names; `name` is the row, for the error."""
    import json

    from shared.errors import FedrecError
    from simulations.private_recipe import recorded_run

    if (path / "model.safetensors").exists():
        return path
    try:
        checkpoint = recorded_run(path)[0] if (path / "metrics.json").exists() else None
    except (KeyError, ValueError, json.JSONDecodeError) as err:
        raise FedrecError(f"{name}: {path / 'metrics.json'} is not a fedrec simulate run's metrics ({err})") from None
    if checkpoint is None or not (checkpoint / "model.safetensors").exists():
        raise FedrecError(f"{name}: {path} is neither a checkpoint nor a fedrec simulate run directory with its "
                          f"test round's weights")  # fmt: skip
    return checkpoint


def grid_points(base: Path) -> list[tuple[str, Path]]:
    """(name, run directory) for every point of simulations/results/privacy_utility.json that
    started from `base` (its `pretrained=` key)."""
    from simulations.records import load, run_setting

    points = (load("privacy_utility") or {}).get("points", [])
    return [(p["name"], Path(p["run_dir"])) for p in points
            if Path(run_setting(p["command"], "pretrained")).resolve() == base.resolve()]  # fmt: skip


def run(args: argparse.Namespace) -> list[dict]:
    from shared.config import DataConfig
    from shared.data.consent import non_consented_users
    from shared.data.dataset import load_dataset
    from shared.errors import FedrecError
    from shared.eval.metrics import paired_gain
    from shared.eval.protocols import full_ranks_of, sampled_ranks_of
    from shared.models.checkpoint import check_catalog, load_checkpoint
    from shared.models.scoring import ModelScorer

    dataset = load_dataset(DataConfig(dataset="movielens-1m"))
    users = non_consented_users(dataset, args.consent_fraction, args.seed)

    def ranks(checkpoint: Path) -> dict[str, np.ndarray]:
        model = load_checkpoint(checkpoint)
        check_catalog(model, dataset)
        scorer = ModelScorer(model, dataset, users=users).two_stage
        return {"full": full_ranks_of(dataset, scorer, "test", users=users),
                "sampled": sampled_ranks_of(dataset, scorer, "test", users=users)}  # fmt: skip

    print(f"scoring {len(users)} users who did not consent", flush=True)
    tuned = [*(grid_points(args.checkpoint) if args.grid else []), *(args.tuned or [])]
    if not tuned:
        raise FedrecError(f"nothing to compare with {args.checkpoint}: give --tuned, or --grid with grid points from it")
    base = ranks(args.checkpoint)
    rows = []
    for name, path in tuned:
        checkpoint = checkpoint_of(name, path)
        after = ranks(checkpoint)
        gains = {f"{p}-{m}": paired_gain(base[p], after[p], m, args.resamples, args.seed)
                 for p in PROTOCOLS for m in METRICS}  # fmt: skip
        rows.append({"name": name, "checkpoint": str(checkpoint), "users": len(users), "gain": gains})
        print(rows[-1], flush=True)
    return rows


def tuned_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=DIRECTORY")
    return name, Path(path)


def markdown(record: dict) -> str:
    users = record["rows"][0]["users"] if record["rows"] else 0
    lines = ["# Fine-tuned against its start, user by user (test items)", "",
             *provenance_lines(record["provenance"]), "",
             f"Each row: the mean over the {users:,} users who did not consent (ML-1M, consent fraction "
             f"{record['consent_fraction']:g}, seed {record['seed']}) of (the fine-tuned model's metric minus the "
             f"start's, `{record['checkpoint']}`), with a 95% bootstrap interval over users "
             f"({record['resamples']} resamples). **beats** when the interval lies above 0.", "",
             "| fine-tuned | " + " | ".join(f"{p} {m}" for p in PROTOCOLS for m in METRICS) + " |",
             "|---|" + "---|" * (len(PROTOCOLS) * len(METRICS))]  # fmt: skip
    for r in record["rows"]:
        cells = []
        for key in (f"{p}-{m}" for p in PROTOCOLS for m in METRICS):
            g = r["gain"][key]
            verdict = " **beats**" if g["low"] > 0 else (" worse" if g["high"] < 0 else "")
            cells.append(f"{g['mean']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}]{verdict}")
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", dest="checkpoint", type=Path, required=True, help="the model fine-tuning started from")
    parser.add_argument("--tuned", type=tuned_arg, action="append",
                        help="NAME=DIRECTORY: a fine-tuned checkpoint or a fedrec simulate run directory; repeatable")
    parser.add_argument("--grid", action="store_true",
                        help="also every point of privacy_utility.json that started from --base")  # fmt: skip
    parser.add_argument("--consent-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=SEED, help="the consent draw's seed: the pretraining's")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", default="paired_gain", help="the results files' name")
    args = parser.parse_args(argv)
    return record_study("paired_gain", args, run, markdown, report=args.report, flag="--base",
                        consent_fraction=args.consent_fraction, seed=args.seed, resamples=args.resamples)


if __name__ == "__main__":
    raise SystemExit(main())
