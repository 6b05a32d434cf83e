"""The benchmark numbers that README.md and docs/ quote, written from the records in
simulations/results/ (the JSON files BENCHMARKS.md is built from), never typed in.

A page marks each quoted span, inline or as lines of their own:

    <!-- results:NAME -->...<!-- /results:NAME -->

and `python -m simulations.page` rewrites what lies between the markers with BLOCKS[NAME]().
tests/test_docs.py fails while a committed span differs from what its function writes now, and
when a number outside the spans looks like a typed-in benchmark result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.errors import FedrecError
from simulations.records import RESULTS, load, prior_share_of, protocol, require, run_setting

ROOT = RESULTS.parents[1]
BLOCK = re.compile(r"<!-- results:(?P<name>[\w-]+) -->(?P<body>.*?)<!-- /results:(?P=name) -->", re.S)
OPENING = re.compile(r"<!-- /?results:[\w-]+ -->")
STRATEGIES = {"fedavg": "FedAvg", "fedadam": "FedAdam", "fedyogi": "FedYogi", "fedprox": "FedProx"}


def pages(root: Path = ROOT) -> list[Path]:
    """The pages that may quote results: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# ---- The records, read once per span ------------------------------------------------------------


def _recipe_rows() -> dict[str, dict[str, Any]]:
    """The main job, popularity and the pretrained model on the users who did not consent: the
    medians of make main's repeats (main-job.json) where they exist, else private_recipe's rows."""
    if repeated := _main_job_repeats():
        m = repeated["median"]
        return {"popularity": m["popularity"], "pretrained": m["pretrained"], "main job": m["test"]}
    rows = require("private_recipe")["rows"]
    by_kind = {kind: next((r for r in rows if r["name"].startswith(kind)), None)
               for kind in ("popularity", "pretrained", "main job")}  # fmt: skip
    if missing := [kind for kind, row in by_kind.items() if row is None]:
        raise FedrecError(f"simulations/results/private_recipe.json has no {missing[0]!r} row")
    return {kind: row["test"]["non_consented"] for kind, row in by_kind.items()}  # type: ignore[index]


def _main_job_repeats() -> dict[str, Any] | None:
    """simulations/main_job's record of make main's repeats, or None before it has one."""
    record = load("main-job")
    return record if record and record.get("repeats") else None


def _recipe_stem() -> str:
    """The record _recipe_rows read."""
    return "main-job" if _main_job_repeats() else "private_recipe"


def _fed_vs_central(partitioning: str) -> list[tuple[str, dict[str, Any]]]:
    """(results file stem, record) of every federated-vs-centralized run with that partitioning."""
    found = [(p.stem, require(p.stem)) for p in sorted(RESULTS.glob("fed_vs_central-*.json"))]
    if not (kept := [(stem, r) for stem, r in found if r["partitioning"] == partitioning]):
        raise FedrecError(f"no simulations/results/fed_vs_central-*.json with partitioning {partitioning}")
    return kept


def _best_fed_vs_central(partitioning: str) -> tuple[str, dict[str, Any]]:
    return max(_fed_vs_central(partitioning), key=lambda sr: sr[1]["ratio"]["full-ndcg@10"])


def _serve_medians(name: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {(m["scenario"], m["connections"]): m for m in require(name)["medians"]}


SERVE_USER, SERVE_BIG = "ML-1M /recommend?user", "synthetic 1,000,000 /recommend?history"


def _serve_records() -> list[str]:
    """serve_load.json (the record) first, then any other wrk record beside it."""
    others = sorted(p.stem for p in RESULTS.glob("serve_load-*.json"))
    return ["serve_load", *others]


def _dp_ratios() -> dict[str, dict[str, float]]:
    """Per device, each DP mode's ratio to a plain step (the modes its record measured)."""
    return {device: {how: r["ratio_to_plain"] for how, r in require(f"dp_step-{device}")["steps"].items() if how != "plain"}
            for device in ("cpu", "cuda")}  # fmt: skip


# ---- Goals: each issue's target, and whether the record meets it -------------------------------

# The targets of the issues that set them, each written once here.
FED_RATIO_GOAL = {"region": 0.95, "user": 0.90}  # #4: federated / centralized full NDCG@10
OVERHEAD_GOAL = 0.5  # #4: fedrec's client updates per second / a trivial Flower app's, at least
DP_STEP_GOAL = 1.5  # #5 (and #24 for the H200): a DP step's time / a plain step's, at most
PRIVATE_GOAL = {"consented": [0.75, 0.09], "no consent": [0.6, 0.045]}  # #24, epsilon 8: sampled HR@10, full NDCG@10
MAIN_JOB_MINUTES = 10  # #24: `make main` in about 10 minutes here
CENTRAL_GOAL = [0.32, 0.185, 0.83]  # #26: full HR@10, full NDCG@10, sampled HR@10 of the two-stage model
# #24's grid (simulations/privacy_utility.py), on the users who did not consent: (setting, consent,
# epsilon) -> the goal's words, sampled HR@10 and full NDCG@10.
GRID_GOALS = {
    ("regional", 0.0, 8.0): ("10 regions, no consented data, epsilon 8", PRIVATE_GOAL["no consent"]),
    ("regional", 0.1, 8.0): ("10 regions, 10% consented, epsilon 8", PRIVATE_GOAL["consented"]),
    ("regional", 0.1, 1.0): ("10 regions, 10% consented, epsilon 1", [0.70, 0.07]),
    ("per-user", 0.1, 8.0): ("one client per user, central DP, 10% consented, epsilon 8", [0.72, 0.08]),
}

# The grid's other regional settings a regional goal may be met with, and what the goal row adds
# to its label when it is.
REGIONAL_VARIANTS = {
    "regional-prior": ", with the silos' popularity prior (chosen on validation)",
    "regional-text": ", with the silos' popularity prior, the public text's neighbours and the item bias weighing more (chosen on validation)",
}

COMPARE: dict[str, Callable[[float, float], bool]] = {
    "at least": lambda m, t: m >= t, "at most": lambda m, t: m <= t, "above": lambda m, t: m > t,
}  # fmt: skip


def _verdict(measured: list[float], targets: list[float], how: str) -> str:
    """'met' when every measured value stands `how` ('at least', 'at most', 'above') its target."""
    met = all(COMPARE[how](m, t) for m, t in zip(measured, targets, strict=True))
    return "met" if met else "**not met**"


def _pair(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in values)


def _record_link(stem: str) -> str:
    """A results file, linked from a page in docs/."""
    return f"[{stem}.md](../simulations/results/{stem}.md)"


def _goal(issue: str, goal: str, how: str, targets: list[float], measured: list[float], fmt: str, stem: str) -> str:
    return (f"| {issue} | {goal} | {how} {_pair(targets, 'g' if how != 'above' else fmt)} | {_pair(measured, fmt)} "
            f"| {_verdict(measured, targets, how)} | {_record_link(stem)} |")  # fmt: skip


def _goal_rows() -> list[str]:
    """A table row for every goal of an issue that a record answers, with the record's verdict."""
    rows = []
    for partitioning, nodes in (("region", "10 regional nodes"), ("user", "one client per user")):
        stem, best = _best_fed_vs_central(partitioning)
        rows.append(_goal("#4", f"federated / centralized full NDCG@10, same model, no DP, {nodes} (best run: "
                          f"{protocol(best['federated']['command'])}, against {best['centralized']['epochs']} epochs)",
                          "at least", [FED_RATIO_GOAL[partitioning]], [best["ratio"]["full-ndcg@10"]], ".2f", stem))  # fmt: skip
    rows.append(_goal("#4", "client updates per second, fedrec / a trivial Flower app, same run", "at least", [OVERHEAD_GOAL],
                      [require("overhead")["ratio"]], ".2f", "overhead"))  # fmt: skip
    for device, ratios in _dp_ratios().items():
        rows.append(_goal("#5, #24", f"DP step / plain step on {device} (Opacus hooks)", "at most", [DP_STEP_GOAL],
                          [ratios["dp-hooks"]], ".2f", f"dp_step-{device}"))  # fmt: skip
    for name in _serve_records():
        record, at8 = require(name), _serve_medians(name)[(SERVE_USER, 8)]
        rows.append(_goal("#28", f"`fedrec serve`, ML-1M `/recommend?user=` at 8 connections, p50 / p99 ms (one-minute "
                          f"load {at8['load1']:.1f} on {record['provenance']['machine']['cores']} shared cores)", "at most",
                          [record["goal"]["p50_ms"], record["goal"]["p99_ms"]], [at8["p50_ms"], at8["p99_ms"]], ".1f", name))  # fmt: skip
    recipe = _recipe_rows()
    pair = ("sampled-hr@10", "full-ndcg@10")
    main = [recipe["main job"][k] for k in pair]
    rows.append(_goal("#24", "main job (10 regions, 10% consented, epsilon 8), users who did not consent: sampled "
                      "HR@10 / full NDCG@10", "at least", PRIVATE_GOAL["consented"], main, ".3f",
                      _recipe_stem()))  # fmt: skip
    rows.append(_goal("#24", "main job against popularity, same users: sampled HR@10 / full NDCG@10", "above",
                      [recipe["popularity"][k] for k in pair], main, ".3f", _recipe_stem()))  # fmt: skip
    rows += _paired_goal_rows(pair)
    if repeated := _main_job_repeats():
        rows.append(_goal("#24", f"`make main` wall time, minutes (median of {len(repeated['repeats'])})", "at most",
                          [MAIN_JOB_MINUTES], [repeated["median"]["wall_seconds"] / 60], ".1f", "main-job"))  # fmt: skip
    rows += _grid_goal_rows(pair)
    # The BCE retrieval loss (the default before #26) and sampled softmax (the default since),
    # each at 25 epochs on CPU; the H200 run used BCE.
    for name, label in (("centralized", "25 epochs, CPU, BCE retrieval loss"),
                        ("loss-25-epochs", "25 epochs, CPU, sampled softmax"),
                        ("centralized-h200", "50 epochs, H200, BCE")):  # fmt: skip
        if name == "loss-25-epochs" and load(name) is None:
            continue  # not run yet
        ranking = require(name)["variants"]["full"]["test"]["ranking"]
        rows.append(_goal("#26", f"centralized two-stage model ({label}): full HR@10 / full NDCG@10 / sampled HR@10",
                          "at least", CENTRAL_GOAL,
                          [ranking["full"]["hr@10"], ranking["full"]["ndcg@10"], ranking["sampled"]["hr@10"]], ".3f", name))  # fmt: skip
    return rows


def _paired_goal_rows(pair: tuple[str, str]) -> list[str]:
    """#24's "every private row beats the pretrained model", counted on paired 95% intervals over
    users (paired_gain) that lie above 0 on both metrics: the grid's DP rows against their start,
    and make main's repeats against theirs. Means that differ by less than a run's noise are not
    compared: the medians' order would be chance."""
    grid_names = {p["name"] for p in require("privacy_utility")["points"] if math.isfinite(float(p["epsilon"]))}
    out = []
    for stem, label, keep in (
        ("paired_gain", "DP grid rows", lambda name: name in grid_names),
        ("paired_gain-main-job", "make main's repeats", lambda name: True),
    ):  # fmt: skip
        rows = [r for r in require(stem)["rows"] if keep(r["name"])]
        if not rows:
            raise FedrecError(f"simulations/results/{stem}.json has no row to judge")
        beats = [r for r in rows if all(r["gain"][k]["low"] > 0 for k in pair)]
        out.append(_goal("#24", f"{label} beating the model pretrained on the consented users, same users: 95% "
                         "paired interval above 0 on sampled HR@10 and full NDCG@10 (rows)", "at least", [len(rows)],
                         [len(beats)], "d", stem))  # fmt: skip
    return out


def _regional_choice(cells: dict[tuple[str, float, float], dict[str, Any]],
                     cell: tuple[str, float, float]) -> dict[str, Any] | None:  # fmt: skip
    """The grid's point for a goal's cell. A regional goal may be met with or without the popularity
    prior, and with or without the public text's neighbours: the rows are told apart on the
    validation items, never on the test items quoted."""
    names = [cell, *((s, *cell[1:]) for s in REGIONAL_VARIANTS)] if cell[0] == "regional" else [cell]
    found = [cells[c] for c in names if c in cells]
    if not found:
        return None
    return max(found, key=lambda p: p["test"].get("valid_non_consented", {}).get("full-ndcg@10", -1.0))


def _grid_goal_rows(pair: tuple[str, str]) -> list[str]:
    """#24's grid goals that the user-level grid has answered; until it has run, the no-consent
    goal from the earlier grid (privacy_utility-v1), whose regional rows were user-level DP too."""
    grid = load("privacy_utility")
    cells = {(p["setting"], p["consent"], float(p["epsilon"])): p for p in (grid or {}).get("points", [])}
    rows = []
    for cell, (label, targets) in GRID_GOALS.items():
        if (point := _regional_choice(cells, cell)) is not None:
            measured, stem = [point["test"]["non_consented"][k] for k in pair], "privacy_utility"
            label += REGIONAL_VARIANTS.get(point["setting"], "") + _median_of(point, ", {}")
        elif cell == ("regional", 0.0, 8.0):
            point = next(p for p in require("privacy_utility-v1")["points"]
                         if p["setting"] == "regional" and float(p["epsilon"]) == 8)  # fmt: skip
            measured, stem = [point["test"][f"ranking-{k}"] for k in pair], "privacy_utility-v1"
        else:
            continue
        rows.append(_goal("#24", f"{label}: sampled HR@10 / full NDCG@10", "at least", targets, measured, ".3f", stem))
    return rows


def goals() -> str:
    """docs/results.md: each issue's goals against the records (its links are relative to docs/)."""
    return "\n".join(["| issue | goal | target | measured | verdict | record |", "|---|---|---|---|---|---|", *_goal_rows()])


# ---- The spans the pages quote ------------------------------------------------------------------


def main_job() -> str:
    """README: the main job against its two baselines, on the users who did not consent."""
    recipe, repeated = _recipe_rows(), _main_job_repeats()
    runs = f", medians of {len(repeated['repeats'])} runs of {repeated['median']['wall_seconds'] / 60:.0f} minutes" \
        if repeated else ""
    return (f"full NDCG@10 {recipe['main job']['full-ndcg@10']:.3f} against {recipe['popularity']['full-ndcg@10']:.3f} "
            f"and {recipe['pretrained']['full-ndcg@10']:.3f}, sampled HR@10 {recipe['main job']['sampled-hr@10']:.3f} "
            f"against {recipe['popularity']['sampled-hr@10']:.3f} and {recipe['pretrained']['sampled-hr@10']:.3f}{runs}")  # fmt: skip


def federated_parity() -> str:
    """README: the best one-client-per-user run against centralized training of the same model."""
    stem, best = _best_fed_vs_central("user")
    command = best["federated"]["command"]
    strategy = run_setting(command, "strategy")
    return (f"{best['federated']['rounds']} rounds of {STRATEGIES.get(strategy, 'FedAvg' if strategy == '?' else strategy)} "
            f"reach {best['ratio']['full-ndcg@10']:.2f}x the full NDCG@10 of {best['centralized']['epochs']} "
            "centralized epochs of the same model")  # fmt: skip


def search_known_item() -> str:
    """cli.md: known-item search over every title."""
    every = require("search_known_item")["all"]
    return f"MRR {every['mrr']:.3f}, HR@10 {every['hr@10']:.4f} over {every['queries']:,} titles"


def serve_load() -> str:
    """cli.md: `fedrec serve` under wrk, the record and any other run beside it."""
    record, medians = require("serve_load"), _serve_medians("serve_load")
    one, eight = medians[(SERVE_USER, 1)], medians[(SERVE_USER, 8)]
    goal = [record["goal"]["p50_ms"], record["goal"]["p99_ms"]]
    verdict = _verdict([eight["p50_ms"], eight["p99_ms"]], goal, "at most")
    text = (f"ML-1M `/recommend?user=` p50 {one['p50_ms']:.1f} ms at one connection; at 8, p50 {eight['p50_ms']:.1f} ms, "
            f"p99 {eight['p99_ms']:.1f} ms, {eight['rps']:.0f} req/s (median of {eight['repeats']} runs, one-minute load "
            f"{eight['load1']:.1f}; the goal of at most {_pair(goal, 'g')} ms: {verdict})")  # fmt: skip
    for name in _serve_records()[1:]:
        other = _serve_medians(name)[(SERVE_USER, 8)]
        met = _verdict([other["p50_ms"], other["p99_ms"]], goal, "at most")
        text += (f"; another record, at load {other['load1']:.1f}, gave {other['p50_ms']:.1f} / {other['p99_ms']:.1f} ms "
                 f"(`{name}.md`: {met})")  # fmt: skip
    if (SERVE_BIG, 1) in medians:
        big1, big8 = medians[(SERVE_BIG, 1)], medians[(SERVE_BIG, 8)]
        text += (f"; on a synthetic 1,000,000-item catalog, p50 {big1['p50_ms']:.0f} ms at one connection and "
                 f"{big8['rps']:.0f} req/s at 8")  # fmt: skip
    return text


def scale() -> str:
    """federated.md: one client per ML-1M user, the largest run of scale.json."""
    record = require("scale")
    row = max(record["rows"], key=lambda r: r["clients"])
    return (f"Measured here (`python -m simulations.scale` runs this {row['repeats']} times, {row['clients']:,} "
            f"clients): {row['seconds_per_round_after_first']:.1f} s per round (the median after the first), "
            f"{row['peak_rss_mib'] / 1024:.1f} GiB peak over the SuperLink, Ray and the clients, "
            f"{row['bytes_per_client_each_way'] / 2**20:.1f} MiB per client each way (text-only item tower), and "
            f"{row['wall_seconds'] / 60:.1f} minutes for the whole run, the final test evaluation of every node included")  # fmt: skip


def overhead() -> str:
    """federated.md: fedrec's client updates per second against a trivial Flower app's."""
    ratio = require("overhead")["ratio"]
    verdict = _verdict([ratio], [OVERHEAD_GOAL], "at least")
    return f"{ratio:.2f} client updates for each one a trivial Flower app completes (goal: at least {OVERHEAD_GOAL:g}, {verdict})"


def dp_step() -> str:
    """privacy.md: the cost of a DP step against a plain one, on the CPU and on the H200."""
    ratios = _dp_ratios()
    hooks = {device: r["dp-hooks"] for device, r in ratios.items()}
    met = [label for device, label in (("cpu", "on the CPU"), ("cuda", "on the H200")) if hooks[device] <= DP_STEP_GOAL]
    verdict = {0: "met on neither", 1: f"met {met[0]} only", 2: "met on both"}[len(met)]
    cores = require("dp_step-cpu")["provenance"]["machine"]["cores"]
    others = "; ".join(f"{name} {r[mode]:.2f}x on {where}" for mode, name in (("dp-functorch", "functorch"), ("dp-ghost", "ghost clipping"))
                       for device, where in (("cpu", "the CPU"), ("cuda", "the H200")) if mode in (r := ratios[device]))  # fmt: skip
    return (f"{hooks['cpu']:.2f}x a plain step on this {cores}-core CPU and {hooks['cuda']:.2f}x on an H200 (Opacus hooks; "
            f"{others}); the goal of at most {DP_STEP_GOAL:g}x is {verdict}")  # fmt: skip


def retrieval_loss() -> str:
    """private-model.md: sampled softmax against BCE, pretraining at equal epochs."""
    valid = require("retrieval_loss")["valid_epoch15"]
    return f"{valid['softmax']['full_ndcg'] / valid['bce']['full_ndcg']:.2f}x BCE's validation full NDCG@10"


def audit() -> str:
    """results.md: what the canary audit found with and without DP, against the epsilon reported."""
    rows = {r["reported_epsilon"] is None: r for r in require("canary_audit")["rows"]}
    plain, private = rows[True], rows[False]
    within = private["epsilon_lower_bound"] <= private["reported_epsilon"]
    return (f"without DP, a lower bound of {plain['epsilon_lower_bound']:.2f} (attack AUC {plain['attack_auc']:.2f}); "
            f"with DP, {private['epsilon_lower_bound']:.2f} (attack AUC {private['attack_auc']:.2f}) against a reported "
            f"epsilon of {private['reported_epsilon']:.2f}, {'within' if within else '**above**: the claim is refuted'}")  # fmt: skip


OPTIMIZER_NAMES = {"sgd": "DP-SGD", "adamw": "DP-Adam"}


def _sweep_line(labels: list[str], r: dict[str, Any]) -> str:
    """A sweep table's row: its labels, then valid full NDCG@10, test full NDCG@10, test sampled HR@10."""
    valid, test = r["test"]["valid_non_consented"], r["test"]["non_consented"]
    return (f"| {' | '.join(labels)} | {valid['full-ndcg@10']:.4f} | {test['full-ndcg@10']:.4f} "
            f"| {test['sampled-hr@10']:.3f} |")  # fmt: skip


def private_sweep() -> str:
    """private-model.md: the fine-tuning sweep's points beside popularity and the pretrained model
    they start from, on the users who did not consent; chosen on the validation column."""
    rows = {r["name"]: r for r in require("private_recipe")["rows"]}
    # The regional sweep started from the checkpoint pretrained before the machine changed; the
    # one retrained since (the per-user points' start) scores differently, so each table quotes its own.
    references = [rows.get(name) for name in ("popularity", "pretrained on consented (15 epochs), earlier checkpoint")]
    if None in references:
        raise FedrecError("simulations/results/private_recipe.json lacks popularity or the sweep's pretrained row")
    sweep = [r for name, r in rows.items() if name.startswith("sweep-") and "valid_non_consented" in r["test"]]

    def line(trained: str, step: str, r: dict[str, Any]) -> str:
        return _sweep_line([trained, step], r)

    return "\n".join([
        "| fine-tuned | optimizer, lr | valid full NDCG@10 | test full NDCG@10 | test sampled HR@10 |",
        "|---|---|---|---|---|",
        *(line(f"({r['name']})", "-", r) for r in references),
        *(line(run_setting(r["command"], "finetune"),
               f"{OPTIMIZER_NAMES[run_setting(r['command'], 'optimizer')]} {run_setting(r['command'], 'lr')}", r)
          for r in sweep),
    ])  # fmt: skip


def per_user_sweep() -> str:
    """private-model.md: the one-client-per-user points of the sweep (`peruser-*`), beside the
    pretrained model they start from, on the users who did not consent."""
    rows = {r["name"]: r for r in require("private_recipe")["rows"]}
    start = rows["pretrained on consented (15 epochs)"]
    points = [r for name, r in rows.items() if name.startswith("peruser-") and "valid_non_consented" in r["test"]]

    def line(trained: str, step: str, norm: str, r: dict[str, Any]) -> str:
        return _sweep_line([trained, step, norm], r)

    return "\n".join([
        "| fine-tuned | client step | central clipping norm | valid full NDCG@10 | test full NDCG@10 | test sampled HR@10 |",
        "|---|---|---|---|---|---|",
        line("(pretrained on consented (15 epochs))", "-", "-", start),
        *(line(run_setting(r["command"], "finetune"), f"SGD {run_setting(r['command'], 'lr')}",
               run_setting(r["command"], "central-clipping-norm"), r) for r in points),
    ])  # fmt: skip


def _no_consent_at_8(settings: list[tuple[str, str]]) -> str:
    """'label sampled HR@10 / full NDCG@10' on the test items, for popularity and each (label,
    grid setting) at consent 0, epsilon 8 (privacy_utility); a missing row names itself."""
    grid = require("privacy_utility")
    cells = {(p["setting"], p["consent"], float(p["epsilon"])): p for p in grid["points"]}
    parts = [("popularity", next(r for r in grid["references"] if (r["name"], r["consent"]) == ("popularity", 0.0)))]
    for label, setting in settings:
        if (setting, 0.0, 8.0) not in cells:
            raise FedrecError(f"simulations/results/privacy_utility.json has no {setting} row at consent 0, epsilon 8")
        parts.append((label, cells[(setting, 0.0, 8.0)]))
    return "; ".join(f"{label} {r['test']['non_consented']['sampled-hr@10']:.3f} / "
                     f"{r['test']['non_consented']['full-ndcg@10']:.4f}{_row_notes(r)}" for label, r in parts)  # fmt: skip


def _row_notes(row: dict[str, Any]) -> str:
    """' (prior at S of epsilon, median of N runs)', each part only where it applies: the grid's
    rows with the prior were not all run at one share."""
    share = prior_share_of(row)
    notes = [] if share is None else [f"prior at {share:.0%} of epsilon"]
    notes += [_median_of(row, "{}")] if "runs" in row else []
    return f" ({', '.join(notes)})" if notes else ""


def _median_of(row: dict, form: str) -> str:
    """`form` holding 'median of N runs', for a grid row repeated with --repeats (one that has
    `runs`); nothing for a single run."""
    return form.format(f"median of {len(row['runs'])} runs") if "runs" in row else ""


# How the pages name a grid setting's fine-tuned runs.
SETTING_WORDS = {"regional": "10 regions", "per-user": "one client per user"}


def _grid_words(setting: str, epsilon: float) -> str:
    return f"{SETTING_WORDS.get(setting, setting)} at epsilon {epsilon:g}"


def popularity_prior() -> str:
    """private-model.md: the regional federation from scratch at epsilon 8, with and without the
    silos' DP popularity counts, beside popularity, on the same users (privacy_utility)."""
    return "sampled HR@10 / full NDCG@10 on the test items: " + _no_consent_at_8(
        [("without the prior", "regional"), ("with it", "regional-prior")])


def prior_share() -> str:
    """private-model.md: the no-consent regional-text point at each share of epsilon given to the
    prior, on validation items (prior_share), and the share chosen."""
    record = require("prior_share")
    parts = []
    for s in record["shares"]:  # each share's validation medians
        notes = ([f"median of {s['runs']} runs"] if s["runs"] > 1 else []) + (["chosen"] if s["share"] == record["chosen"] else [])
        parts.append(f"{s['share']:.0%} {s['valid']['sampled-hr@10']:.3f} / {s['valid']['full-ndcg@10']:.4f}"
                     + (f" ({', '.join(notes)})" if notes else ""))  # fmt: skip
    return (f"validation sampled HR@10 / full NDCG@10 at epsilon {record['epsilon']:g}, by the prior's share: "
            + "; ".join(parts))


def transition_prior() -> str:
    """private-model.md: the pretrained model with the silos' transition counts, exact and under
    DP, on validation items (transition_prior), each at its best beta."""
    rows = require("transition_prior")["rows"]
    base = next(r for r in rows if r["release"].startswith("none"))

    def best(release: str, eps: float | None) -> dict:
        return max((r for r in rows if (r["release"], r["epsilon"]) == (release, eps)),
                   key=lambda r: r["valid"]["full-ndcg@10"])  # fmt: skip

    dp = sorted({r["epsilon"] for r in rows if r["epsilon"] is not None}, reverse=True)
    parts = [f"pretrained alone {base['valid']['full-ndcg@10']:.4f}",
             f"with the exact counts {best('dense', None)['valid']['full-ndcg@10']:.4f}",
             *(f"released at epsilon {e:g} {max(best(k, e)['valid']['full-ndcg@10'] for k in ('dense', 'sparse')):.4f}"
               for e in dp)]  # fmt: skip
    return "validation full NDCG@10, each at its best weight: " + "; ".join(parts)


def consented_transitions() -> str:
    """private-model.md: with 10% consent, the pretrained model and its DP fine-tuning at epsilon 8
    (10 regions) beside popularity, on the same users' test items (privacy_utility)."""
    grid = require("privacy_utility")
    refs = {r["name"]: r for r in grid["references"] if r["consent"] == 0.1}
    point = next(p for p in grid["points"] if (p["setting"], p["consent"], float(p["epsilon"])) == ("regional", 0.1, 8.0))
    pretrained = "pretrained" + (" with the co-occurrences" if "--transitions" in refs["pretrained"]["command"] else "")
    parts = [f"{label} {r['test']['non_consented']['sampled-hr@10']:.3f} / {r['test']['non_consented']['full-ndcg@10']:.4f}"
             for label, r in (("popularity", refs["popularity"]), (pretrained, refs["pretrained"]),
                              ("fine-tuned under DP at epsilon 8", point))]  # fmt: skip
    return "sampled HR@10 / full NDCG@10 on the test items of the users who did not consent: " + "; ".join(parts)


def cooccurrence() -> str:
    """private-model.md: the pretrained model alone, with the next-item table, and with the chosen
    window and voting items, on validation items (cooccurrence)."""
    from shared.models.transitions import RECENT, RECENT_DECAY, WINDOW, WINDOW_DECAY

    rows = require("cooccurrence")["rows"]

    def best(match: Callable[[dict], bool]) -> dict:
        return max((r for r in rows if match(r)), key=lambda r: r["valid"]["sampled-hr@10"])["valid"]

    parts = [(label, best(m)) for label, m in (
        ("the pretrained model alone", lambda r: r["window"] == 0),
        ("with the next item after the last only", lambda r: (r["window"], r.get("recent")) == (1, 1)),
        (f"counting pairs within {WINDOW} items with the last {RECENT} voting",
         lambda r: (r["window"], r.get("window_decay"), r.get("recent"), r.get("recent_decay"))
         == (WINDOW, WINDOW_DECAY, RECENT, RECENT_DECAY)))]  # fmt: skip
    return "validation sampled HR@10 / full NDCG@10: " + "; ".join(
        f"{label} {v['sampled-hr@10']:.3f} / {v['full-ndcg@10']:.4f}" for label, v in parts)


def paired_gain() -> str:
    """results.md, private-model.md: what the DP fine-tuning adds to its start, user by user, with
    its 95% interval (paired_gain), for the regional epsilon-8 row and every one-client-per-user
    row the grid has run, by epsilon."""
    rows = {r["name"]: r["gain"] for r in require("paired_gain")["rows"]}
    if missing := {"regional-c0.1-eps8", "per-user-c0.1-eps8"} - set(rows):
        raise FedrecError(f"simulations/results/paired_gain.json has no {sorted(missing)[0]!r} row")

    def gain(name: str, key: str) -> str:
        g = rows[name][key]
        return f"{g['mean']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}]"

    def both(name: str) -> str:
        return f"sampled HR@10 {gain(name, 'sampled-hr@10')}, full NDCG@10 {gain(name, 'full-ndcg@10')}"

    per_user = sorted((float(m[1]), name) for name in rows if (m := re.fullmatch(r"per-user-c0\.1-eps([0-9.]+)", name)))
    return "; ".join([f"{_grid_words('regional', 8)}: {both('regional-c0.1-eps8')}",
                      *(f"{_grid_words('per-user', eps)}: {both(name)}" for eps, name in per_user)])


def cooccurrence_release() -> str:
    """private-model.md: the consented table alone, with the other users' exact counts (all pairs,
    then the consented table's pairs only), and the best epsilon-8 release (cooccurrence_release)."""
    rows = require("cooccurrence_release")["rows"]
    released = [r for r in rows if r.get("epsilon") == 8]
    if len(rows) < 3 or not released:
        raise FedrecError("simulations/results/cooccurrence_release.json lacks the reference rows or an epsilon-8 release")
    parts = [("the consented table alone", rows[0]), ("with the other users' exact counts", rows[1]),
             ("those counts on the consented table's pairs only", rows[2]),
             ("released there at epsilon 8 (best clip and threshold)",
              max(released, key=lambda r: r["valid"]["full-ndcg@10"]))]  # fmt: skip
    return "validation full NDCG@10 / sampled HR@10: " + "; ".join(
        f"{label} {r['valid']['full-ndcg@10']:.4f} / {r['valid']['sampled-hr@10']:.3f}" for label, r in parts)


def text_neighbours_valid() -> str:
    """private-model.md: on validation items (text_neighbours), the epsilon-8 regional-prior
    model alone, with the text term at its best full NDCG@10 as trained (item bias weight 1), and
    with the grid's setting (term and item bias weight); then, without the trained towers, the
    prior it started from alone and with the term at the setting best for each metric."""
    from shared.models.text_neighbours import TEMPERATURE
    from simulations.privacy_utility import ITEM_BIAS_WEIGHT, TEXT_NEIGHBOURS

    rows = require("text_neighbours")["rows"]
    towers = [r for r in rows if r.get("towers", True)]
    as_trained = [r for r in towers if r.get("bias_weight", 1.0) == 1.0]
    bare = [r for r in rows if not r.get("towers", True)]
    grid = (TEXT_NEIGHBOURS, TEMPERATURE, ITEM_BIAS_WEIGHT)
    picked = [next((r for r in as_trained if not r["weight"]), None),
              next((r for r in towers if (r["weight"], r.get("temperature"), r.get("bias_weight", 1.0)) == grid), None),
              next((r for r in bare if not r["weight"]), None)]  # fmt: skip
    if None in picked or not any(r["weight"] for r in bare) or not any(r["weight"] for r in as_trained):
        raise FedrecError("simulations/results/text_neighbours.json lacks the model alone, the grid's setting, or "
                          "the rows without the towers (--prior)")  # fmt: skip

    def cells(r: dict) -> str:
        return f"{r['valid']['full-ndcg@10']:.4f} / {r['valid']['sampled-hr@10']:.3f}"

    def setting(r: dict) -> str:
        return f"weight {r['weight']:g}, temperature {r['temperature']:g}"

    term = max((r for r in as_trained if r["weight"]), key=lambda r: r["valid"]["full-ndcg@10"])
    best = {m: max((r for r in bare if r["weight"]), key=lambda r: r["valid"][m]) for m in ("full-ndcg@10", "sampled-hr@10")}
    return ("validation full NDCG@10 / sampled HR@10: the model alone " + cells(picked[0])
            + f"; with the term ({setting(term)}) {cells(term)}; with the term ({setting(picked[1])}) and the "
            + f"item bias weighing {ITEM_BIAS_WEIGHT:g} {cells(picked[1])}; without the trained towers, the prior "
            + f"alone {cells(picked[2])}, with the term at its best full NDCG@10 ({setting(best['full-ndcg@10'])}) "
            + f"{cells(best['full-ndcg@10'])} and at its best sampled HR@10 ({setting(best['sampled-hr@10'])}) "
            + cells(best["sampled-hr@10"]))  # fmt: skip


def text_neighbours() -> str:
    """private-model.md: regional-prior and regional-text at epsilon 8 without consent, beside
    popularity, on the same users' test items (privacy_utility)."""
    return "sampled HR@10 / full NDCG@10: " + _no_consent_at_8(
        [("without the term", "regional-prior"), ("with it", "regional-text")])


def step_scale() -> str:
    """private-model.md: the fine-tuned models scaled along their own step, on validation items
    (step_scale): each run's full NDCG@10 / sampled HR@10 at every scale."""
    rows = require("step_scale")["rows"]
    grid = {p["run_dir"]: _grid_words(p["setting"], float(p["epsilon"]))
            for p in (load("privacy_utility") or {}).get("points", [])}  # fmt: skip
    parts = []
    for run in dict.fromkeys(r["finetuned"] for r in rows):
        name = next((n for d, n in grid.items() if run.startswith(d + "/")), Path(run).parent.parent.name)
        cells = ", ".join(f"{r['scale']:g}x {r['valid']['full-ndcg@10']:.4f} / {r['valid']['sampled-hr@10']:.3f}"
                          for r in rows if r["finetuned"] == run)  # fmt: skip
        parts.append(f"{name}: {cells}")
    return "validation full NDCG@10 / sampled HR@10 at each multiple of the step (0x: the pretrained model; " \
           "1x: as fine-tuned): " + "; ".join(parts)


BLOCKS: dict[str, Callable[[], str]] = {
    "main-job": main_job, "federated-parity": federated_parity, "search-known-item": search_known_item,
    "serve-load": serve_load, "scale": scale, "overhead": overhead, "dp-step": dp_step,
    "retrieval-loss": retrieval_loss, "goals": goals, "audit": audit, "private-sweep": private_sweep,
    "popularity-prior": popularity_prior, "per-user-sweep": per_user_sweep, "transition-prior": transition_prior,
    "consented-transitions": consented_transitions, "cooccurrence": cooccurrence, "paired-gain": paired_gain,
    "cooccurrence-release": cooccurrence_release, "text-neighbours-valid": text_neighbours_valid,
    "text-neighbours": text_neighbours, "step-scale": step_scale, "prior-share": prior_share,
}  # fmt: skip


# ---- Filling the pages ---------------------------------------------------------------------------


def fill(text: str, where: str, blocks: dict[str, Callable[[], str]] = BLOCKS) -> str:
    """`text` with every marked span rewritten; a span alone on its lines stays on lines of its own."""

    def body(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in blocks:
            raise FedrecError(f"{where}: no generator for <!-- results:{name} --> (known: {', '.join(sorted(blocks))})")
        new = blocks[name]()
        new = f"\n{new}\n" if match["body"].startswith("\n") else new
        return f"<!-- results:{name} -->{new}<!-- /results:{name} -->"

    out = BLOCK.sub(body, text)
    if OPENING.search(BLOCK.sub("", out)):
        raise FedrecError(f"{where}: a <!-- results:NAME --> marker without its <!-- /results:NAME --> pair")
    return out


def filled(root: Path = ROOT) -> list[tuple[Path, str]]:
    """(page, its new text) for each page whose marked spans differ from what the records say now;
    every span is computed before the caller writes anything, so a missing record changes no page."""
    changed = []
    for page in pages(root):
        text = page.read_text(encoding="utf-8")
        if (new := fill(text, str(page.relative_to(root)))) != text:
            changed.append((page, new))
    return changed


def stale(root: Path = ROOT) -> list[str]:
    """The pages whose marked spans differ from what the records say now."""
    return [str(page.relative_to(root)) for page, _ in filled(root)]


# ---- Numbers typed in by hand --------------------------------------------------------------------

# How a benchmark result reads: a number with a unit of measurement or a multiplier ("19 ms",
# "37 req/s", "4.4 GiB", "1.44x"), or any decimal that is not part of a dotted run (an address,
# a version like 2.13.0).
RESULT_LIKE = re.compile(r"(?<![\w.])(?:\d[\d,]*(?:\.\d+)?(?:\s?(?:ms|req/s|[KMG]iB)\b|x\b)|\d+\.\d+(?!\.?\d))")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`(?:[^`\n]|\n(?!\n))*`")  # a span may wrap, but not across a paragraph
LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
# Numbers that are not results: versions named in prose. Keep this short; a result belongs in a span.
ALLOWED = ("Flower 1.42",)
# Generated from shared/config.py: its numbers are defaults, and a test holds it to its generator.
NOT_RESULTS = ("docs/configuration.md",)


def typed_numbers(text: str) -> list[str]:
    """The benchmark-looking numbers of a page outside its marked spans, commands and links."""
    for pattern in (BLOCK, FENCE, CODE_SPAN, LINK_TARGET):
        text = pattern.sub(" ", text)
    for phrase in ALLOWED:
        text = text.replace(phrase, " ")
    return RESULT_LIKE.findall(text)


def hand_typed(root: Path = ROOT) -> list[str]:
    """'page: number' for every benchmark-looking number typed into README.md or docs/."""
    found = []
    for page in pages(root):
        if (rel := str(page.relative_to(root))) not in NOT_RESULTS:
            found += [f"{rel}: {n}" for n in typed_numbers(page.read_text(encoding="utf-8"))]
    return found
