"""Federated against centralized training of the same model, in one run of this runner.

    python -m simulations.fed_vs_central [--epochs 10] [--rounds 10] [--local-epochs 1] \\
        [--partitioning region] [--fraction 1.0] [--fraction-evaluate 1.0] \\
        [--strategy fedavg] [--server-lr 0.01] [--set KEY=VALUE ...] [--work DIR]

Both sides use the app's model and training settings (text-only item tower, dim 64, 2 layers,
lr 0.002, batch 32) and no DP. Centralized: `fedrec train` for --epochs epochs, keeping its best
validation epoch. Federated: `fedrec simulate` with --strategy (FedAvg; FedAdam and
FedYogi step the server's model by --server-lr) for --rounds rounds of --local-epochs local
epochs on each sampled node, validated each round on --fraction-evaluate of the nodes and
tested federatedly on every node's test items. The ratio is federated / centralized test
NDCG@10 (full catalog, two-stage). With the default settings each federated round sees the
data once, like one centralized epoch, but takes about a tenth of its optimizer steps: FedAvg
averages ten clients' short trajectories of ~1/10 of the data each. The validation curves of both sides are kept to show where each stands.
Each side's result is kept in --work under its own settings, so an interrupted run resumes with
the side still missing. Writes simulations/results/fed_vs_central-<partitioning>-<R>x<L>.json,
.md, .png (R rounds of L local epochs; -<strategy> appended when it is not FedAvg), so runs of
different protocols sit side by side.
`--epochs 5 --rounds 5 --local-epochs 10` gives both sides the same optimizer steps.
--set passes more run-config keys to the federated side: one client per user wants
`--local-epochs 1 --strategy fedadam --set optimizer=sgd lr=1.0 weight-decay=0.0 server-tau=1e-8`
(each client's update is then its gradient; docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from simulations.charts import LONG_RUN, WINDOW, window_means
from simulations.provenance import provenance, provenance_lines, write_results

RESULTS = Path(__file__).parent / "results"
KEYS = [("full", "hr@10"), ("full", "ndcg@10"), ("sampled", "hr@10"), ("sampled", "ndcg@10")]


def centralized(args: argparse.Namespace) -> dict:
    out = args.work / f"central-epochs{args.epochs}"
    cmd = ["train", "--dataset", args.dataset, "--no-id-embedding", "--epochs", str(args.epochs),
           "--patience", str(args.epochs), "--output", str(out)]  # fmt: skip
    if not (out / "metrics.json").exists():
        print(f"fed_vs_central: centralized, {args.epochs} epochs", flush=True)
        subprocess.run([sys.executable, "-m", "cli", *cmd], check=True)
    metrics = json.loads((out / "metrics.json").read_text())
    test = {f"{p}-{m}": metrics["test"]["ranking"][p][m] for p, m in KEYS}
    curve = [h["valid"]["ranking"]["full"]["ndcg@10"] for h in metrics["history"]]
    return {"command": "fedrec " + " ".join(cmd), "test": test, "epochs": len(metrics["history"]), "valid_ndcg": curve}


def strategy_tag(args: argparse.Namespace) -> str:
    """'' for FedAvg (the files written before the option existed), else '-fedadam-lr0.01';
    then one '-<key><value>' per --set override ('-optimizersgd'), resume-from aside."""
    tag = "" if args.strategy == "fedavg" else f"-{args.strategy}-lr{args.server_lr:g}"
    return tag + "".join("-" + kv.replace("=", "") for kv in args.set if not kv.startswith("resume-from="))


def federated(args: argparse.Namespace) -> dict:
    """A finished run with --rounds rounds under these settings, made if missing. With
    `--set resume-from=RUN/round-NNN` (more rounds for a finished run), the rounds are added to
    RUN itself, which is where the server writes a resumed run."""
    resume = next((kv.split("=", 1)[1] for kv in args.set if kv.startswith("resume-from=")), "")
    out = Path(resume).resolve().parent.parent if resume else args.work / (
        f"federated-rounds{args.rounds}-local{args.local_epochs}-fraction{args.fraction:g}"
        + strategy_tag(args) + ("" if args.fraction_evaluate == 1 else f"-eval{args.fraction_evaluate:g}"))
    overrides = [f"dataset={args.dataset}", f"partitioning={args.partitioning}", "dp=false",
                 f"num-server-rounds={args.rounds}", f"local-epochs={args.local_epochs}",
                 f"fraction-train={args.fraction}", f"fraction-evaluate={args.fraction_evaluate}",
                 "min-train-nodes=1", f"strategy={args.strategy}", f"server-lr={args.server_lr}",
                 f"output-dir={out}", *args.set]  # fmt: skip

    def finished() -> list[Path]:
        runs = [json.loads((d / "metrics.json").read_text()) | {"dir": d} for d in out.glob("run-*")] if out.exists() else []
        return [r["dir"] for r in runs if "test" in r and r["rounds"] == args.rounds]

    if not finished():
        print(f"fed_vs_central: federated, {args.rounds} rounds", flush=True)
        subprocess.run([sys.executable, "-m", "cli", "simulate", "--run-config", *overrides], check=True)
    summary = json.loads((finished()[0] / "metrics.json").read_text())
    test = {f"{p}-{m}": summary["test"][f"ranking-{p}-{m}"] for p, m in KEYS}
    curve = [h["valid"]["ranking-full-ndcg@10"] for h in summary["history"]]
    return {"command": "fedrec simulate --run-config " + " ".join(overrides), "test": test,
            "rounds": summary["rounds"], "valid_ndcg": curve}  # fmt: skip


def federated_curve(valid: list[float]) -> str:
    """Round by round, or, for long runs, means of ten rounds: a few hundred users validating
    each round make single rounds noise."""
    if len(valid) <= LONG_RUN:
        return "Federated by round: " + ", ".join(f"{v:.4f}" for v in valid) + "."
    means = window_means(valid, WINDOW)
    return f"Federated, mean of each {WINDOW} rounds: " + ", ".join(f"{v:.4f}" for v in means) + "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens-1m")
    parser.add_argument("--partitioning", default="region")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--fraction", type=float, default=1.0, help="nodes trained each round")
    parser.add_argument("--fraction-evaluate", type=float, default=1.0,
                        help="nodes validating each round (the final test uses all)")
    parser.add_argument("--strategy", choices=("fedavg", "fedadam", "fedyogi"), default="fedavg")
    parser.add_argument("--server-lr", type=float, default=0.01, help="FedAdam/FedYogi's server step")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more run-config keys for the federated side, e.g. optimizer=sgd")
    parser.add_argument("--work", type=Path, default=Path("outputs/fed_vs_central"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if bad := [kv for kv in args.set if "=" not in kv]:
        parser.error(f"--set takes KEY=VALUE, got '{bad[0]}'")
    args.work = args.work.resolve() / args.partitioning
    started = provenance()  # the commit whose code runs; this takes long enough for main to move on
    central, fed = centralized(args), federated(args)
    ratio = {k: fed["test"][k] / central["test"][k] for k in central["test"]}
    report = {"provenance": started, "dataset": args.dataset, "partitioning": args.partitioning,
              "centralized": central, "federated": fed, "ratio": ratio}  # fmt: skip
    p = report["provenance"]
    rows = [f"| {k} | {central['test'][k]:.4f} | {fed['test'][k]:.4f} | {ratio[k]:.2f} |" for k in central["test"]]
    md = "\n".join([
        f"# Federated vs centralized, same model, same run: {args.dataset}, {args.partitioning}", "",
        *provenance_lines(p), "",
        f"Centralized: `{central['command']}` ({central['epochs']} epochs, best validation epoch kept).  ",
        f"Federated: `{fed['command']}` ({fed['rounds']} rounds, last round's model).", "",
        "Test item, two-stage model:", "", "| metric | centralized | federated | federated / centralized |",
        "|---|---|---|---|", *rows, "",
        "Validation full NDCG@10, centralized by epoch: " + ", ".join(f"{v:.4f}" for v in central["valid_ndcg"]) + ".  ",
        federated_curve(fed["valid_ndcg"]), "",
        f"Goal (issue 4): NDCG@10 ratio >= 0.95 for 10 regional nodes, >= 0.90 one client per user. "
        f"Measured full-catalog NDCG@10 ratio: **{ratio['full-ndcg@10']:.2f}**.",
    ]) + "\n"  # fmt: skip
    name = f"fed_vs_central-{args.partitioning}-{args.rounds}x{args.local_epochs}{strategy_tag(args)}"
    write_results(args.out, name, report, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
