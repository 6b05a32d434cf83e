"""How much of a silo's epsilon the popularity prior gets (#24; chosen on validation items).

    python -m simulations.prior_share --epsilon 8 --shares 0.5 0.75 0.9 0.97 --run-config num-server-rounds=3

Without consented data, privacy_utility's `regional-text` silo spends its budget twice: once on
one Gaussian release of its users' clipped item counts (the popularity prior, client/popularity.py),
then on DP-SGD, the node's PLD accountant composing the two to `target-epsilon`. The grid gives
the release `PRIOR_SHARE` of the budget, chosen here (it was 0.5, chosen at epsilons 1 and 4
beside one checkpoint: popularity_prior.md). On the sampled protocol the prior is most of the model:
the same silos without it (`regional`) score far lower at every epsilon, so a sharper prior may be
worth more than the DP-SGD budget it takes.

Each share is the grid's `regional-text` point at consent 0 with `popularity-epsilon` = share x
epsilon, everything else the same, run and scored as privacy_utility runs and scores it (its
best round, every user). Runs of the same command already recorded count, in this record or in
privacy_utility.json (the grid's own row at `PRIOR_SHARE`); `--repeats N` tops each share up to
N runs, since the DP noise comes from the OS's secure source and no seed fixes it. The share
chosen is the one whose weaker goal metric stands furthest ahead of #24's goal, each metric the
median of its runs on validation items: the row must pass both. The page shows validation items
only; the test items of the chosen share are quoted by privacy_utility once `PRIOR_SHARE` is it.

Writes simulations/results/prior_share.json and .md, each run with its command, commit and machine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from shared.atomic import write_json, write_text
from shared.errors import FedrecError
from simulations import privacy_utility as grid
from simulations.doc_numbers import PRIVATE_GOAL
from simulations.provenance import provenance

RESULTS = Path(__file__).parent / "results"
SETTING = "regional-text"
GOAL = PRIVATE_GOAL["no consent"]  # sampled HR@10, full NDCG@10
METRICS = ("sampled-hr@10", "full-ndcg@10")  # the goal's, in its order
VALID = "valid_non_consented"  # judge()'s validation items (everyone at consent 0)


def point(share: float, epsilon: float, extra: list[str], dataset: str) -> grid.Point:
    """The grid's `regional-text` point at consent 0 and `epsilon`, its prior at `share`."""
    [p] = grid.grid(dataset, [SETTING], [0.0], [epsilon], extra, recipe=[], pretrained={}, population=0, prior_share=share)
    return p


def recorded(command: str, record: dict[str, Any], grid_record: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs of `command` already on disk: this study's, then the grid's (privacy_utility.json)."""
    mine = [r for r in record["runs"] if r["command"] == command]
    rows = [r for r in grid_record["points"] if (r["command"], r["consent"]) == (command, 0.0)]
    theirs = [{**run, "command": command, "machine": rows[0]["machine"], "from": "privacy_utility.json"}
              for run in (grid.runs_of(rows[0]) if rows else [])]  # fmt: skip
    seen = {r["run_dir"] for r in mine}
    return mine + [r for r in theirs if r["run_dir"] not in seen]


def medians(runs: list[dict[str, Any]]) -> list[float]:
    """Each goal metric's median over `runs`, on validation items."""
    return [statistics.median(r["test"][VALID][m] for r in runs) for m in METRICS]


def margin(values: list[float]) -> float:
    """How far the weaker metric stands ahead of its goal, as a ratio (1: exactly at it)."""
    return min(v / g for v, g in zip(values, GOAL))


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per share, in order: its run count, its validation medians of the goal's metrics and their
    margin; what the choice, the page and the docs read."""
    out = []
    for share in sorted({r["share"] for r in runs}):
        mine = [r for r in runs if r["share"] == share]
        values = medians(mine)
        out.append({"share": share, "runs": len(mine), "valid": dict(zip(METRICS, values)), "margin": margin(values)})
    return out


def choose(runs: list[dict[str, Any]]) -> float:
    """The share whose validation medians stand furthest ahead of the goal."""
    return max(summary(runs), key=lambda s: s["margin"])["share"]


def markdown(record: dict[str, Any]) -> str:
    p = record["provenance"]
    lines = ["# The popularity prior's share of a silo's epsilon (validation items)", "",
             f"Command: `{p['command']}`  ", f"Machine: {p['machine']}  ", "",
             f"privacy_utility's `{SETTING}` point at consent 0 and epsilon {record['epsilon']:g} (10 regional silos, "
             "ML-1M, user-level DP, replace-one), its item-count release given `share` of each silo's budget and "
             "DP-SGD the rest. Validation items of every user, the best round of each run; each share's row is the "
             "median of its runs. Chosen: the share whose weaker metric stands furthest ahead of #24's goal "
             f"(sampled HR@10 {GOAL[0]:g}, full NDCG@10 {GOAL[1]:g}).", "",
             "| share | popularity-epsilon | runs | valid sampled HR@10 | valid full NDCG@10 | weaker metric / goal |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for s in record["shares"]:
        mark = " (chosen)" if s["share"] == record["chosen"] else ""
        lines.append(f"| {s['share']:g}{mark} | {record['epsilon'] * s['share']:g} | {s['runs']} | "
                     f"{s['valid']['sampled-hr@10']:.4f} | {s['valid']['full-ndcg@10']:.4f} | {s['margin']:.3f} |")  # fmt: skip
    lines += ["", "| share | commit | machine | valid sampled HR@10 | valid full NDCG@10 | command |",
              "|---|---|---|---|---|---|"]
    for r in record["runs"]:
        values = [r["test"][VALID][m] for m in METRICS]
        lines.append(f"| {r['share']:g} | `{r['commit'][:7]}` | {grid.machine_words(r['machine'])} | {values[0]:.4f} | "
                     f"{values[1]:.4f} | `{r['command']}` |")  # fmt: skip
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", type=float, default=8.0, help="each silo's user-level budget")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.5, 0.75, 0.9, 0.97],
                        help="the release's shares of the budget, each in (0, 1)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per share, those recorded counting")
    parser.add_argument("--run-config", nargs="*", default=[], metavar="KEY=VALUE", help="keys for every run")
    parser.add_argument("--dataset", choices=(grid.DEFAULT_DATASET,), default=grid.DEFAULT_DATASET)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=Path("outputs/prior_share"))
    return parser.parse_args(argv)


def check(args: argparse.Namespace) -> None:
    if not (args.epsilon > 0 and math.isfinite(args.epsilon)):
        raise FedrecError(f"--epsilon {args.epsilon:g}: a finite budget > 0 (the prior needs DP)")
    if bad := [s for s in args.shares if not 0 < s < 1]:
        raise FedrecError(f"--shares {bad[0]:g}: a share in (0, 1) (DP-SGD needs some of the budget)")
    if args.repeats < 1:
        raise FedrecError(f"--repeats {args.repeats}: must be >= 1")
    grid.check_extra(args.run_config)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _main(args)
    except FedrecError as err:
        print(f"prior_share: error: {err}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    check(args)
    path = args.out / "prior_share.json"
    record = json.loads(path.read_text()) if path.exists() else {"runs": []}
    if record["runs"] and record.get("epsilon") != args.epsilon:
        raise FedrecError(f"{path}: recorded at epsilon {record['epsilon']:g}, not {args.epsilon:g}; move it first")
    grid_record = grid.load(args.out / f"{grid.stem(args.dataset)}.json", args.dataset)
    started = provenance()
    work = args.work.resolve()
    shares = list(dict.fromkeys(args.shares))
    for i, share in enumerate(shares, 1):
        p = point(share, args.epsilon, args.run_config, args.dataset)
        runs = recorded(p.command, record, grid_record)
        # A share's runs already on disk are kept even when it is not asked for again.
        record["runs"] = [r for r in record["runs"] if r["command"] != p.command] + [{**r, "share": share} for r in runs]
        while len(runs) < args.repeats:
            print(f"[{i}/{len(shares)}] share {share:g}: running (run {len(runs) + 1} of {args.repeats})", flush=True)
            row = grid.run_point(p, work / f"share{share:g}", args.dataset)
            runs.append({**{k: row[k] for k in ("command", "commit", "machine") + grid.RUN_FIELDS if k in row},
                         "share": share})  # fmt: skip
            record["runs"].append(runs[-1])
            _save(record, args, started, path)
    _save(record, args, started, path)
    print(markdown(record))
    return 0


def _save(record: dict[str, Any], args: argparse.Namespace, started: dict[str, Any], path: Path) -> None:
    shares = summary(record["runs"])
    record.update(epsilon=args.epsilon, provenance=started, shares=shares,
                  chosen=max(shares, key=lambda s: s["margin"])["share"])
    write_json(path, record)
    write_text(path.with_suffix(".md"), markdown(record))


if __name__ == "__main__":
    sys.exit(main())
