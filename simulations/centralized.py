"""Centralized (non-private) reference on ML-1M, and its ablations.

    python -m simulations.centralized [--variants full no-text text-only] [--epochs 25] [--keep DIR]

Each variant is one `fedrec train` run (same seed, same data); the checkpoint's metrics.json is
collected into simulations/results/<report>.json, .md and .png (default report: centralized), with the
command, the commit and the machine. Variants:
- full:      text + ID embeddings, retrieval and ranking (the reference);
- no-text:   ID embeddings only (what the text encoder adds);
- text-only: no ID embeddings: every item vector comes from its text (the cold-start case).
- full-bce:  `full` with the retrieval loss it had before sampled softmax (BCE), at equal epochs.
Retrieval-only vs retrieval+ranking is reported for every variant from the same checkpoint.
Peak memory is the max resident set of the training process. Checkpoints stay in
--keep/<report>/<variant> (default outputs/centralized): a stopped sweep, run again, reuses the
variants it finished with the same command and trains the rest. `fedrec train` shows each
epoch's progress.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

from shared.atomic import write_json
from simulations.provenance import provenance, write_results

RESULTS = Path(__file__).parent / "results"
VARIANTS = {
    "full": [], "no-text": ["--no-text"], "text-only": ["--no-id-embedding"],
    # The retrieval loss side by side (#26): `full` trains with the default, sampled softmax.
    "full-bce": ["--retrieval-loss", "bce"],
}  # fmt: skip
ANCHORS = (
    "Full catalog: SASRec+ (full softmax; Klenitskiy and Vasilev, RecSys 2023) HR@10 0.3152, NDCG@10 "
    "0.1821; BERT4Rec (Petrov and Macdonald) 0.2821 / 0.1516. Sampled-100 HR@10: SASRec 0.8245, "
    "BERT4Rec 0.8040; ItemPop 0.454."
)


def train_variant(name: str, extra: list[str], args: argparse.Namespace, workdir: Path) -> dict:
    """One variant's checkpoint and metrics; a variant already finished in `workdir` with the same
    command is read back instead of trained again, so a stopped sweep resumes where it stopped."""
    out = workdir / name
    cmd = [sys.executable, "-m", "cli", "train", "--dataset", args.dataset,
           "--output", str(out), "--epochs", str(args.epochs), "--patience", str(args.patience),
           *extra]  # fmt: skip
    done = out / "variant.json"
    if done.exists() and (kept := json.loads(done.read_text()))["command"] == "fedrec " + " ".join(cmd[3:]):
        print(f"[{name}] finished earlier: {done}", flush=True)
        return kept
    print(f"[{name}] {' '.join(cmd[2:])}", flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("history")
    metrics["peak_rss_mib"] = round(max(peak_kib, before) / 1024, 1)
    metrics["command"] = "fedrec " + " ".join(cmd[3:])
    write_json(done, metrics)
    return metrics


def reevaluate(report: dict, checkpoints: Path) -> dict:
    """Evaluate each variant's kept checkpoint again with this commit's harness (e.g. after the
    sampled protocol's negative draws changed), keeping the training provenance beside it."""
    from shared.config import DataConfig
    from shared.data.dataset import load_dataset
    from shared.models.checkpoint import check_catalog, load_checkpoint
    from shared.models.training import evaluate_model

    dataset = load_dataset(DataConfig(dataset=report["dataset"]))
    report["trained_with"] = report["provenance"]
    report["provenance"] = provenance()
    for name, metrics in report["variants"].items():
        model = load_checkpoint(checkpoints / name)
        check_catalog(model, dataset)
        metrics["test"] = evaluate_model(model, dataset, "test")
    return report


def markdown(report: dict) -> str:
    p = report["provenance"]
    lines = [
        f"# Centralized reference on {report['dataset']} (test item, leave-one-out)", "",
        f"Command: `{p['command']}`  ", f"Commit: `{p['commit']}`  ",
        f"Machine: {p['machine']['cpu']}, {p['machine']['cores']} cores, "
        f"{p['machine']['ram_gib']} GiB, torch threads {p['machine']['torch_threads']}  ",
        f"Date: {p['date']}", "",
        *([f"Trained by `{report['trained_with']['command']}` at commit "
           f"`{report['trained_with']['commit']}`; the test metrics above were re-evaluated at "
           "this page's commit from the kept checkpoints.", ""] if "trained_with" in report else []),
        *([f"Note: {report['note']}", ""] if report.get("note") else []),
        f"Anchors: {ANCHORS}", "",
        "| variant | stage | full HR@10 | full NDCG@10 | sampled HR@10 | sampled NDCG@10 "
        "| recall@100 | epochs (best) | s/epoch | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, m in report["variants"].items():
        for stage in ("retrieval", "ranking"):
            f, s = m["test"][stage]["full"], m["test"][stage]["sampled"]
            recall = f"{f['recall@100']:.4f}" if "recall@100" in f else ""
            lines.append(
                f"| {name} | {'retrieval only' if stage == 'retrieval' else 'retrieval + ranking'} "
                f"| {f['hr@10']:.4f} | {f['ndcg@10']:.4f} | {s['hr@10']:.4f} | {s['ndcg@10']:.4f} "
                f"| {recall} | {m['epochs_run']} ({m['best_epoch']}) "
                f"| {m['seconds_per_epoch']:.0f} | {m['peak_rss_mib']:.0f} |"
            )
    lines += ["", "Each variant's exact command is in the JSON file beside this page (`variants.*.command`)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens-1m")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", default="centralized", help="results file name (no suffix)")
    parser.add_argument("--keep", type=Path, default=Path("outputs/centralized"),
                        help="checkpoints go here (under the report's name); finished variants are reused")  # fmt: skip
    parser.add_argument("--reevaluate", type=Path, default=None, metavar="CHECKPOINTS",
                        help="only re-evaluate the checkpoints kept by an earlier --keep run")  # fmt: skip
    args = parser.parse_args(argv)
    if args.reevaluate:
        report = reevaluate(json.loads((args.out / f"{args.report}.json").read_text()), args.reevaluate)
        write_results(args.out, args.report, report, markdown(report))
        return 0
    report = {"provenance": provenance(), "dataset": args.dataset, "variants": {}}
    workdir = args.keep.resolve() / args.report
    for name in args.variants:
        report["variants"][name] = train_variant(name, VARIANTS[name], args, workdir)
        # Written after every variant, so a long run that is stopped keeps what it finished.
        write_results(args.out, args.report, report, markdown(report), quiet=True)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
