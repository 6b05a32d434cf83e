"""The privacy-utility grid (#24): test HR@10 and NDCG@10 against epsilon, every private row under
user-level DP, beside popularity and the model pretrained on the consented users, on the same users.

    python -m simulations.privacy_utility --setting regional per-user --consent 0 0.1 \\
        --epsilons 0.5 1 2 4 8 inf --run-config num-server-rounds=3

The grid is epsilon x setting x consent fraction; each point is one `fedrec simulate` run.
- `regional`: 10 regional silos, DP-SGD (Opacus) in each, one user's whole history one example:
  user-level DP within the silo, `target-epsilon` per silo.
- `regional-prior`: `regional`, each silo first releasing its users' item counts under DP at
  `PRIOR_SHARE` of its epsilon (`popularity-epsilon`, server/popularity.py), from which the
  server starts the item bias; DP-SGD gets the rest. No point without DP.
- `regional-text`: `regional-prior`, its model also scoring with the public text's neighbours
  (`text-neighbours`, shared/models/text_neighbours.py), and with its item bias weighing more
  than the towers trained under DP (`item-bias-weight`): no parameter, no privacy cost, so the
  same budget. No point without DP.
- `per-user`: one client per user under central DP (DP-FedAvg: each user's whole update clipped
  on its node, Gaussian noise added by the server to the round's sum), no local DP-SGD. Its
  `central-noise-multiplier` is calibrated here so that the planned rounds spend epsilon
  (client-level, add/remove one client, delta min(target-delta, N^-1.1), no amplification by
  sampling: what the run's privacy report accounts). Without SecAgg+ unless --run-config asks
  (`secure-aggregation=true`): it changes what the server sees, not the model.
- `inf`: the same point without DP (`dp=false`).
- Consent 0: the federation starts from scratch (docs/private-model.md has no better start
  without consented data), with the federation's model (text-only items, item bias) and the
  app's defaults for the rest. Consent > 0: the server pretrains on the consented users
  (`fedrec train --consented-only`, kept in --work and reused, as simulations.private_recipe
  does), the federation starts from that checkpoint (`pretrained`), and the point's keys are the
  Makefile's RECIPE, make main's private recipe.
- --run-config adds keys to every point (rounds, sampling, ...), after the recipe's.

Every model, popularity and the pretrained model included, is scored in one process on the test
items of the users who did not consent (everyone at consent 0), and of everyone
(simulations.private_recipe.judge), from the run's best-round checkpoint: under DP a one-user
node releases no evaluation metrics, so the federation's own test would be empty.

Finished points are kept in simulations/results/privacy_utility.json (ML-1M; other datasets:
privacy_utility-DATASET.json), each with its command, commit and machine, so an interrupted grid
resumes where it stopped (`--force` reruns); each row is merged into the record as it stands on
disk, so one invocation per setting may run side by side. `--repeats N` runs each point until it
has N runs of its command, the runs already recorded counting, and the row then quotes each
metric's median over them (`runs` in the JSON keeps every one): the runs differ in the DP noise,
which comes from the OS's secure source and which no seed fixes. Writes .json, .md and .png;
`--replot` redraws the page and the chart from the JSON; `--dry-run` prints each point's
command. The earlier grid (record-level DP for its per-user rows) is privacy_utility-v1.json.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.app import app_defaults
from cli.simulate import parse_overrides
from shared.atomic import atomic_path, write_json, write_text
from shared.errors import FedrecError
from shared.privacy.accounting import central_noise_multiplier
from simulations.federated import run as timed_run
from simulations.private_recipe import MODEL, judge, pretrain, pretrained_dir, recorded_run
from simulations.provenance import provenance
from simulations.records import prior_share_of

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
DEFAULT_DATASET = "movielens-1m"
# The text term's weight and the item bias's, chosen together on validation items beside a
# DP-trained model and the prior: the row with the best full NDCG@10
# (simulations/results/text_neighbours.md).
TEXT_NEIGHBOURS = 40.0
ITEM_BIAS_WEIGHT = 1.5
SETTINGS = {"regional": ("partitioning=region",), "regional-prior": ("partitioning=region",),
            "per-user": ("partitioning=user",),
            "regional-text": ("partitioning=region", f"text-neighbours={TEXT_NEIGHBOURS:g}",
                              f"item-bias-weight={ITEM_BIAS_WEIGHT:g}")}
WITH_PRIOR = ("regional-prior", "regional-text")  # the settings whose silos release their item counts
# regional-prior: each silo first releases its item counts (server/popularity.py), at this share
# of its epsilon, and the rest goes to DP-SGD: beside the prior and the public text's neighbours,
# the towers DP-SGD trains add little, and the prior's noise costs more than the training's.
# Chosen on validation items at epsilon 8 (simulations/results/prior_share.md); it was 0.5
# (popularity_prior.md). Each row's page label says the share its own command ran at.
PRIOR_SHARE = 0.9
# What the grid sets on each point; the same key in --run-config would make the row lie about it.
GRID_KEYS = ("dataset", "partitioning", "consent-fraction", "pretrained", "seed", "output-dir", "dp",
             "target-epsilon", "noise-multiplier", "central-dp", "central-noise-multiplier",
             "popularity-epsilon", "text-neighbours", "item-bias-weight")  # fmt: skip
METRICS = ("full-hr@10", "full-ndcg@10", "sampled-hr@10", "sampled-ndcg@10")
# A run's own fields, beside the point's identity (setting, consent, epsilon, name, command, machine).
RUN_FIELDS = ("run_dir", "commit", "rounds", "test_round", "client_epsilon_max", "wall_seconds",
              "seconds_per_round_median", "peak_rss_mib", "bytes_per_client_each_way", "test",
              "epsilon_spent", "epsilon_spent_by")  # fmt: skip
PLOTTED = ("full-ndcg@10", "sampled-hr@10")
REFERENCES = {"popularity": "popularity", "pretrained": "pretrained on the consented users"}


@dataclass(frozen=True)
class Point:
    """One `fedrec simulate` run of the grid."""

    setting: str
    consent: float
    epsilon: float  # inf: no DP
    overrides: tuple[str, ...]  # its --run-config keys, output-dir aside

    @property
    def name(self) -> str:
        return f"{self.setting}-c{self.consent:g}-eps{self.epsilon:g}"

    @property
    def command(self) -> str:
        return "fedrec simulate --run-config " + " ".join(self.overrides)


def makefile_recipe(makefile: Path = ROOT / "Makefile") -> list[str]:
    """The Makefile's RECIPE (make main's private fine-tuning keys), read from the one place it is
    written."""
    found = re.search(r"^RECIPE\s*\?=\s*(.+)$", makefile.read_text(), re.M) if makefile.is_file() else None
    if found is None:
        raise FedrecError(f"{makefile}: no `RECIPE ?= ...` line to take the private recipe from")
    return found.group(1).split()


def merged(*groups: Iterable[str]) -> tuple[str, ...]:
    """KEY=VALUE groups as one list, a later group's value winning, each key once where it first
    appears."""
    keys: dict[str, str] = {}
    for pair in (p for group in groups for p in group):
        key, _, value = pair.partition("=")
        keys[key] = value
    return tuple(f"{k}={v}" for k, v in keys.items())


def privacy_keys(setting: str, epsilon: float, rounds: int, delta: float, prior_share: float = PRIOR_SHARE) -> list[str]:
    """A point's privacy: none, DP-SGD in each silo at `epsilon` (`prior_share` of it released
    first as the popularity prior, in the settings with one), or DP-FedAvg whose noise spends
    `epsilon` over `rounds` releases (rounded up: never less noise than the budget needs)."""
    if math.isinf(epsilon):
        return ["dp=false"]
    if setting == "regional":
        return ["dp=true", f"target-epsilon={epsilon:g}"]
    if setting in WITH_PRIOR:
        return ["dp=true", f"target-epsilon={epsilon:g}", f"popularity-epsilon={epsilon * prior_share:g}"]
    noise = math.ceil(central_noise_multiplier(epsilon, rounds, delta) * 1e4) / 1e4
    return ["dp=false", "central-dp=true", f"central-noise-multiplier={noise:g}"]


def grid(
    dataset: str,
    settings: Iterable[str],
    consents: Iterable[float],
    epsilons: Iterable[float],
    extra: Iterable[str],
    *,
    recipe: Iterable[str],
    pretrained: Mapping[float, Path],
    population: int,
    prior_share: float = PRIOR_SHARE,
) -> list[Point]:
    """Every point, consent fraction by consent fraction. `pretrained` maps each consent > 0 to its
    checkpoint; `population` is the per-user federation's N (its delta is capped at N^-1.1, as
    the server caps it); `prior_share`: the prior's share of epsilon (simulations.prior_share)."""
    extra, epsilons = list(extra), list(epsilons)
    config = {**app_defaults(), **parse_overrides(extra)}
    rounds = int(config["num-server-rounds"])
    delta = min(float(config["target-delta"]), max(population, 1) ** -1.1)
    # Calibrated once. The prior needs DP: without it, regional-prior would be regional's point.
    privacy = {(s, e): privacy_keys(s, e, rounds, delta, prior_share) for s in settings for e in epsilons
               if not (s in WITH_PRIOR and math.isinf(e))}  # fmt: skip
    points = []
    for consent in consents:
        start = ([f"consent-fraction={consent:g}", f"pretrained={pretrained[consent]}", *MODEL, *recipe] if consent > 0
                 else [f"consent-fraction={consent:g}", *MODEL])  # fmt: skip
        for setting, eps in privacy:
            keys = merged(SETTINGS[setting], [f"dataset={dataset}"], start, privacy[setting, eps], extra)
            points.append(Point(setting, consent, eps, keys))
    return points


# ---- The record: .json, .md, .png ---------------------------------------------------------------


def machine_words(m: dict[str, Any]) -> str:
    """A run's machine in a table cell: its GPU, else its CPU and cores."""
    return m.get("gpu") or f"{m['cpu']}, {m['cores']} cores"


def _commit(commit: str) -> str:
    """The short hash, and whether the tree held uncommitted changes when the row ran."""
    return commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")


def _spent(row: dict[str, Any]) -> str:
    eps = row.get("epsilon_spent")
    return "-" if eps is None else f"{eps:.2f} ({row['epsilon_spent_by']})"


def runs_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A point's runs: its `runs` when repeated, else the row itself is its one run."""
    return row.get("runs") or [{k: row[k] for k in RUN_FIELDS if k in row}]


def summarise(row: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The point's row over its runs: one run as it is; several, each metric's median (per set of
    users), the largest epsilon any run spent, the median timings, and every run kept in `runs`.
    `run_dir` and `commit` stay the first run's, which simulations.paired_gain reads."""
    runs = [{k: r[k] for k in RUN_FIELDS if k in r} for r in runs]
    summary = {**{k: v for k, v in row.items() if k not in RUN_FIELDS and k != "runs"}, **runs[0]}
    if len(runs) == 1:
        return summary
    summary["test"] = {users: {key: statistics.median(r["test"][users][key] for r in runs)
                               for key in runs[0]["test"][users]} for users in runs[0]["test"]}  # fmt: skip
    for key in ("wall_seconds", "seconds_per_round_median", "peak_rss_mib"):
        if all(key in r for r in runs):
            summary[key] = statistics.median(r[key] for r in runs)
    if all("epsilon_spent" in r for r in runs):
        summary["epsilon_spent"] = max(r["epsilon_spent"] for r in runs)
    return {**summary, "runs": runs}


def tables(report: dict[str, Any]) -> list[str]:
    """One table per consent fraction: popularity and the pretrained model, then the grid's rows,
    all on the same users."""
    lines: list[str] = []
    for consent in sorted({r["consent"] for r in report["points"] + report["references"]}):
        refs = sorted((r for r in report["references"] if r["consent"] == consent), key=lambda r: r["name"] != "popularity")
        rows = sorted((r for r in report["points"] if r["consent"] == consent), key=lambda r: (r["setting"], r["epsilon"]))
        users = next(iter(refs + rows))["test"]["non_consented"]["users"]
        who = f"all {users:,} users" if consent == 0 else f"the {users:,} users who did not consent"
        lines += [f"Consent {consent:g}: test items of {who}.", "",
                  "| model | epsilon | epsilon spent | rounds | full HR@10 | full NDCG@10 | sampled HR@10 "
                  "| sampled NDCG@10 | commit | machine | command |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in refs + rows:
            label = REFERENCES[r["name"]] if "setting" not in r else r["setting"]
            if (share := prior_share_of(r)) is not None:  # the grid's share has changed once: say each row's
                label += f", prior at {share:.0%} of epsilon"
            if "runs" in r:
                label += f" (median of {len(r['runs'])} runs)"
            commits = ", ".join(dict.fromkeys(f"`{_commit(run['commit'])}`" for run in runs_of(r)))
            eps = "-" if "setting" not in r else ("no DP" if math.isinf(r["epsilon"]) else f"{r['epsilon']:g}")
            m = r["test"]["non_consented"]
            lines.append(f"| {label} | {eps} | {_spent(r)} | {r.get('rounds', '-')} | "
                         + " | ".join(f"{m[k]:.4f}" for k in METRICS)
                         + f" | {commits} | {machine_words(r['machine'])} | `{r['command']}` |")  # fmt: skip
        lines.append("")
    return lines


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Privacy-utility on {report['dataset']} (test item, two-stage model, user-level DP)", "",
             "Regional: 10 silos, DP-SGD in each, user-level within the silo, epsilon per silo (spent: the "
             "largest client's, replace-one). Per-user: one client per user, central DP (DP-FedAvg, noise "
             "calibrated to epsilon over the planned rounds; spent: client-level, add/remove one client, as "
             "the run's privacy report accounts it). Consent 0 starts from scratch; consent > 0 from the "
             "model pretrained on the consented users, fine-tuned with make main's recipe. Every model is "
             "scored on the same users' test items from its best-round checkpoint; one seeded run per row, "
             "unless the row says it is the median of several runs of its command (they differ in the DP "
             "noise, which no seed fixes; epsilon spent: the largest of theirs).", ""]  # fmt: skip
    if report["dataset"] == DEFAULT_DATASET:
        lines += ["The earlier grid (3 rounds from scratch; its per-user rows were record-level local DP, "
                  "not user-level) is kept apart in privacy_utility-v1.json / .md, not mixed in here.", ""]  # fmt: skip
    return "\n".join(lines + tables(report))


def plot(report: dict[str, Any], path: Path) -> None:
    """One panel per metric; a line per (setting, consent) over epsilon, no DP at the right end;
    popularity and the pretrained model as horizontal lines, one per consent fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = sorted({r["epsilon"] for r in report["points"]})
    x = {e: i for i, e in enumerate(eps)}  # evenly spaced: 0.5 ... 8 doubles, so a log axis
    consents = sorted({r["consent"] for r in report["points"] + report["references"]})
    # Dashed: no consented users; solid (then dash-dot, dotted): with consented users.
    styles = {0.0: "--", **dict(zip([c for c in consents if c > 0], ("-", "-.", ":")))}
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(11, 4.2))
    for ax, metric in zip(axes, PLOTTED):
        for color, setting in zip(("C0", "C2", "C1", "C3"), SETTINGS):
            for consent in consents:
                pts = sorted((r for r in report["points"] if (r["setting"], r["consent"]) == (setting, consent)),
                             key=lambda r: r["epsilon"])  # fmt: skip
                if pts:
                    ax.plot([x[r["epsilon"]] for r in pts], [r["test"]["non_consented"][metric] for r in pts],
                            marker="o", c=color, ls=styles[consent], label=f"{setting}, consent {consent:g}")  # fmt: skip
        for r in report["references"]:
            ax.axhline(r["test"]["non_consented"][metric], c="0.5" if r["name"] == "popularity" else "k",
                       ls=styles[r["consent"]], lw=1, label=f"{REFERENCES[r['name']]}, consent {r['consent']:g}")  # fmt: skip
        ax.set_xticks(range(len(eps)), ["no DP" if math.isinf(e) else f"{e:g}" for e in eps])
        ax.set(xlabel="epsilon (user-level)", ylabel=f"test {metric}", title=metric)
    fig.suptitle(f"{report['dataset']}: test items of the users who did not consent (everyone at consent 0)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, -0.2))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def stem(dataset: str) -> str:
    return "privacy_utility" if dataset == DEFAULT_DATASET else f"privacy_utility-{dataset}"


def load(path: Path, dataset: str) -> dict[str, Any]:
    """The record at `path` (epsilons back to floats: JSON has no infinity), or a new one."""
    if not path.exists():
        return {"dataset": dataset, "points": [], "references": []}
    report = json.loads(path.read_text())
    if "references" not in report:
        raise FedrecError(f"{path}: an earlier grid's record (no consent, per-user rows under record-level DP); "
                          f"move it to {path.with_name(path.stem + '-v1.json')} first")  # fmt: skip
    for r in report["points"]:
        r["epsilon"] = float(r["epsilon"])
    return report


def save(report: dict[str, Any], out: Path) -> None:
    name = stem(report["dataset"])
    write_json(out / f"{name}.json", {**report, "points": [
        {**r, "epsilon": r["epsilon"] if math.isfinite(r["epsilon"]) else "inf"} for r in report["points"]]})  # fmt: skip
    write_text(out / f"{name}.md", markdown(report))
    plot(report, out / f"{name}.png")


def page_section(results: Path = RESULTS) -> list[str]:
    """BENCHMARKS.md's section (simulations.page): the ML-1M grid's chart and tables, or, until it
    has run, where the earlier grid is; nothing when neither is there."""
    path, earlier = results / f"{stem(DEFAULT_DATASET)}.json", results / f"{stem(DEFAULT_DATASET)}-v1.md"
    command = ("`python -m simulations.privacy_utility --setting regional per-user --consent 0 0.1 "
               "--epsilons 0.5 1 2 4 8 inf --run-config ...`")  # fmt: skip
    if path.exists():
        report = load(path, DEFAULT_DATASET)
        body = ["![privacy-utility](privacy_utility.png)", "", *markdown(report).splitlines()[2:],
                f"Regenerate: {command}; each row's own command is its `fedrec simulate` run."]  # fmt: skip
    elif earlier.exists():
        body = [f"The user-level grid has not run on ML-1M yet: {command}. The earlier grid, whose per-user rows "
                f"were record-level DP and not user-level, is kept apart: {earlier.name}."]  # fmt: skip
    else:
        return []
    return ["## Privacy-utility", "", *body]


# ---- Running the grid ------------------------------------------------------------------------------


def check_extra(extra: list[str]) -> None:
    """--run-config keys: known to the app, and none the grid sets itself."""
    keys = parse_overrides(extra)
    for key in keys:
        if key in GRID_KEYS:
            raise FedrecError(f"--run-config {key}: the grid sets it on every point (see --setting, --consent, --epsilons)")
        if key not in app_defaults():
            raise FedrecError(f"--run-config {key}: unknown key (see [tool.flwr.app.config])")


def population(dataset: str, extra: list[str]) -> int:
    """The per-user federation's N: its partitions, counted as `fedrec simulate` counts them."""
    from shared.config import DataConfig, PartitionConfig, from_run_config
    from shared.data.dataset import load_dataset
    from shared.data.partition import partition_users

    config = {**app_defaults(), **parse_overrides(extra), "dataset": dataset, "partitioning": "user"}
    data = load_dataset(from_run_config(DataConfig, config))
    return partition_users(data, from_run_config(PartitionConfig, config)).num_partitions


def privacy_spent(run_dir: Path) -> tuple[float, str] | None:
    """What the run's privacy report says was spent: DP-FedAvg's client-level epsilon, or the
    largest silo's; None without DP."""
    path = run_dir / "privacy_report.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    if report.get("central"):
        return float(report["central"]["epsilon"]), "central"
    return float(report["epsilon_quantiles"]["p100"]), "max client"


def run_point(point: Point, work: Path, dataset: str) -> dict[str, Any]:
    """One point: the timed run, then its best-round checkpoint scored like the references."""
    started = provenance()  # the code this point runs, whatever the tree holds when it ends
    timed = timed_run(point.name, list(point.overrides), work / point.name)
    checkpoint, info = recorded_run(Path(timed["run_dir"]))
    row: dict[str, Any] = {
        "setting": point.setting, "consent": point.consent, "epsilon": point.epsilon, "name": point.name,
        "command": point.command, "commit": started["commit"], "machine": started["machine"], **info,
        **{k: timed[k] for k in ("wall_seconds", "seconds_per_round_median", "peak_rss_mib", "bytes_per_client_each_way")},
        "test": judge(checkpoint, point.consent, dataset),
    }  # fmt: skip
    if (spent := privacy_spent(Path(timed["run_dir"]))) is not None:
        row["epsilon_spent"], row["epsilon_spent_by"] = spent
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--consent", nargs="+", type=float, default=[0.0, 0.1], help="consent fractions")
    parser.add_argument("--epsilons", nargs="+", type=float, default=[0.5, 1, 2, 4, 8, math.inf],
                        help="user-level budgets; inf: the same point without DP")  # fmt: skip
    parser.add_argument("--run-config", nargs="*", default=[], metavar="KEY=VALUE", help="keys for every point")
    parser.add_argument("--dataset", choices=(DEFAULT_DATASET, "movielens-100k"), default=DEFAULT_DATASET)
    parser.add_argument("--pretrain-epochs", type=int, default=15, help="the consented-only pretraining's epochs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=Path("outputs/privacy_utility"))
    parser.add_argument("--transitions", action="store_true",
                        help="the server's pretraining also counts the consented users' transitions "
                             "(fedrec train --transitions)")
    parser.add_argument("--force", action="store_true", help="rerun points already recorded")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per point, those recorded counting; the row quotes each metric's median")
    parser.add_argument("--replot", action="store_true", help="only redraw the page and the chart from the JSON")
    parser.add_argument("--dry-run", action="store_true", help="print each point's command, run nothing")
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> list[Point]:
    """The points `args` ask for, after checking them."""
    if bad := [c for c in args.consent if not 0 <= c < 1]:
        raise FedrecError(f"--consent {bad[0]:g}: a fraction in [0, 1) (some users must not have consented)")
    if bad := [e for e in args.epsilons if not e > 0]:
        raise FedrecError(f"--epsilons {bad[0]:g}: must be > 0 (inf: no DP)")
    if args.repeats < 1:
        raise FedrecError(f"--repeats {args.repeats}: must be >= 1")
    if args.pretrain_epochs < 1:
        raise FedrecError(f"--pretrain-epochs {args.pretrain_epochs}: must be >= 1")
    check_extra(args.run_config)
    work, consents = args.work.resolve(), sorted(set(args.consent))
    return grid(args.dataset, dict.fromkeys(args.setting), consents, dict.fromkeys(args.epsilons), args.run_config,
                recipe=makefile_recipe(),
                pretrained={c: pretrained_dir(work, c, args.pretrain_epochs, args.dataset, args.transitions)
                            for c in consents if c > 0},
                population=population(args.dataset, args.run_config) if "per-user" in args.setting else 0)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _main(args)
    except FedrecError as err:
        print(f"privacy_utility: error: {err}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    path = args.out / f"{stem(args.dataset)}.json"
    report = load(path, args.dataset)
    if args.replot:
        if not report["points"] + report["references"]:
            raise FedrecError(f"{path}: no rows to plot")
        save(report, args.out)
        return 0
    points = plan(args)
    if args.dry_run:
        print("\n".join(f"{p.name}: {p.command}" for p in points))
        return 0
    work = args.work.resolve()

    def record(row: dict[str, Any], table: str, same: tuple[str, ...]) -> None:
        # Read again first: rows another invocation recorded meanwhile (the other setting) are kept.
        report.update(load(path, args.dataset))
        report[table] = [r for r in report[table] if tuple(r[k] for k in same) != tuple(row[k] for k in same)] + [row]
        save(report, args.out)

    def recorded(table: str, command: str, consent: float) -> bool:
        return not args.force and any((r["command"], r["consent"]) == (command, consent) for r in report[table])

    for consent in sorted(set(args.consent)):
        refs = [("popularity", None, f"fedrec evaluate --baseline popularity --dataset {args.dataset} "
                                     f"--consent-fraction {consent:g} --users non-consented")]
        if consent > 0:
            checkpoint, command = pretrain(work, consent, args.pretrain_epochs, args.dataset, args.transitions)
            refs.append(("pretrained", checkpoint, command))
        for name, checkpoint, command in refs:
            if not recorded("references", command, consent):
                started = provenance()
                record({"name": name, "consent": consent, "command": command, "commit": started["commit"],
                        "machine": started["machine"], "test": judge(checkpoint, consent, args.dataset)},
                       "references", ("name", "consent"))  # fmt: skip
        mine = [p for p in points if p.consent == consent]
        for i, point in enumerate(mine, 1):
            same = [r for r in report["points"] if (r["command"], r["consent"]) == (point.command, consent)]
            runs = [] if args.force or not same else runs_of(same[0])
            if len(runs) >= args.repeats:
                print(f"[consent {consent:g}, {i}/{len(mine)}] {point.name}: recorded, skipped", flush=True)
                continue
            while len(runs) < args.repeats:
                print(f"[consent {consent:g}, {i}/{len(mine)}] {point.name}: running (run {len(runs) + 1} of "
                      f"{args.repeats})", flush=True)  # fmt: skip
                row = run_point(point, work, args.dataset)
                runs.append(row)
                record(summarise(row, runs), "points", ("setting", "consent", "epsilon"))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
