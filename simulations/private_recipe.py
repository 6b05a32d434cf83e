"""The private recipe on ML-1M (#24): pretrain on the consented users, fine-tune under DP.

    python -m simulations.private_recipe --consent-fraction 0.1 --pretrain-epochs 15 \\
        --point eps8-sgd dp=true target-epsilon=8 optimizer=sgd lr=0.5 batch-size=256

1. The server's pretraining: `fedrec train --consented-only` on the consented users (drawn with
   the seed), text-only item tower with the per-item bias, as the federation runs it. Kept in
   --work and reused by every point with the same consent fraction and epochs.
2. Each point: `fedrec simulate` over 10 regional silos (or one client per user, when its keys
   say `partitioning=user`), starting from that checkpoint (`pretrained`), with the point's
   run-config keys.
3. Every model is judged on the same users' test items: the users who did NOT consent (their
   data reached the model only through DP), and everyone. Popularity and the pretrained model
   stand in the same table, so "private fine-tuning adds something" is read off one row.

Writes simulations/results/private_recipe.json and .md, each row with its commands, the commit
and the machine; finished points are kept, so a second invocation adds rows.

`make main` runs the same steps; its outputs are recorded without running anything again:

    python -m simulations.private_recipe --pretrained outputs/pretrained \
        --record main-job "$(cat command.txt)" outputs/run-...
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from shared.atomic import write_json, write_text
from simulations.provenance import provenance

RESULTS = Path(__file__).parent / "results"
DATASET = "movielens-1m"
SEED = 42
# As the federation runs the model: text-only items (ID tables drown in DP noise), item bias.
MODEL = ["use-id-embedding=false", "use-item-bias=true"]
METRICS = (("full", "hr@10"), ("full", "ndcg@10"), ("sampled", "hr@10"), ("sampled", "ndcg@10"))


def fedrec(*argv: str) -> None:
    cmd = [sys.executable, "-m", "cli", *argv]
    print("+ fedrec " + " ".join(argv), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"private_recipe: error: fedrec {argv[0]} failed")


def pretrained_dir(work: Path, consent: float, epochs: int, dataset: str = DATASET, transitions: bool = False) -> Path:
    """Where `pretrain` keeps its checkpoint: one per dataset, consent fraction, epochs and
    whether it counts the consented users' transitions."""
    name = f"pretrained-c{consent:g}-e{epochs}" if dataset == DATASET else f"pretrained-{dataset}-c{consent:g}-e{epochs}"
    return work / (name + ("-t" if transitions else ""))


def pretrain(work: Path, consent: float, epochs: int, dataset: str = DATASET,
             transitions: bool = False) -> tuple[Path, str]:  # fmt: skip
    out = pretrained_dir(work, consent, epochs, dataset, transitions)
    argv = ["train", "--dataset", dataset, "--consent-fraction", f"{consent:g}", "--consented-only",
            "--no-id-embedding", "--item-bias", "--epochs", str(epochs), "--patience", str(epochs),
            "--seed", str(SEED), *(["--transitions"] if transitions else []), "--output", str(out)]  # fmt: skip
    if not (out / "model.safetensors").exists():
        fedrec(*argv)
    return out, "fedrec " + " ".join(argv)


def judge(checkpoint: Path | None, consent: float, dataset_name: str = DATASET) -> dict[str, dict[str, float]]:
    """Test metrics of the two-stage model (or popularity, for None) on the non-consented users
    and on everyone, in one process: the dataset is read once (and the model scored once when
    nobody consented: both sets are everyone). Also the validation items of the non-consented
    users (`valid_non_consented`): what a recipe is chosen on, so that the test items stay unseen."""
    import numpy as np

    from shared.config import DataConfig
    from shared.data.consent import non_consented_users
    from shared.data.dataset import load_dataset
    from shared.eval.protocols import evaluate
    from shared.models.checkpoint import load_checkpoint
    from shared.models.popularity import Popularity
    from shared.models.training import evaluate_model

    dataset = load_dataset(DataConfig(dataset=dataset_name))
    # The model (or popularity) is built once and scored on each set of users.
    model = Popularity.fit(dataset) if checkpoint is None else load_checkpoint(checkpoint)
    non_consented = non_consented_users(dataset, consent, SEED)
    out = {}
    for name, stage, users in (("non_consented", "test", non_consented), ("all", "test", None),
                               ("valid_non_consented", "valid", non_consented)):  # fmt: skip
        if name == "all" and out["non_consented"]["users"] == dataset.num_users:
            out["all"] = out["non_consented"]
            continue
        if checkpoint is None:
            result = evaluate(dataset, model, stage, users=users)
        else:
            result = evaluate_model(model, dataset, stage, users=users)["ranking"]
        out[name] = {f"{p}-{m}": float(result[p][m]) for p, m in METRICS}
        out[name]["users"] = int(dataset.num_users if users is None else len(np.asarray(users)))
    return out


def recorded_run(run_dir: Path) -> tuple[Path, dict]:
    """A finished `fedrec simulate` run's best-round checkpoint and what the table says of it."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = metrics.get("test_round") or metrics["rounds"]
    info: dict = {"run_dir": str(run_dir), "rounds": metrics["rounds"], "test_round": best}
    report = run_dir / "privacy_report.json"
    if report.exists():
        info["client_epsilon_max"] = json.loads(report.read_text())["epsilon_quantiles"].get("p100")
    return run_dir / f"round-{best:03d}", info


def federate(work: Path, name: str, pretrained: Path, consent: float, keys: list[str]) -> tuple[Path, str, dict]:
    out = work / name
    # Regional silos unless the point names its partitioning (one client per user): each key once.
    silos = [] if any(k.startswith("partitioning=") for k in keys) else ["partitioning=region"]
    overrides = [*silos, f"pretrained={pretrained}", f"consent-fraction={consent:g}", *MODEL, *keys]
    argv = ["simulate", "--run-config", f"output-dir={out}", *overrides]
    before = set(out.glob("run-*"))
    started = time.perf_counter()
    fedrec(*argv)
    (run_dir,) = set(out.glob("run-*")) - before
    checkpoint, info = recorded_run(run_dir)
    info["wall_seconds"] = round(time.perf_counter() - started)
    return checkpoint, "fedrec simulate --run-config " + " ".join(overrides), info


def markdown(report: dict) -> str:
    p = report["provenance"]
    lines = ["# The private recipe on ML-1M (test item, two-stage model)", "",
             f"Machine: {p['machine']}", "",
             "Pretrained on the consented users (`fedrec train --consented-only`), then fine-tuned over 10 "
             "regional silos (`fedrec simulate`, `pretrained`). Metrics on the test items of the users who "
             "did not consent (their data reached the model only through DP fine-tuning), and of everyone. "
             "One seeded run per row; epsilon is per client, user-level, replace-one, delta 1e-6.", "",
             "Recipes are compared on the validation items of the users who did not consent (valid full "
             "NDCG@10), never on their test items.", "",
             "| model | consent | users | full HR@10 | full NDCG@10 | sampled HR@10 | sampled NDCG@10 | valid full NDCG@10 | epsilon (max client) | commit | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["rows"]:
        for who in ("non_consented", "all"):
            m = r["test"][who]
            eps = r.get("client_epsilon_max")
            valid = r["test"].get(f"valid_{who}", {}).get("full-ndcg@10")
            lines.append(f"| {r['name']} | {r['consent']:g} | {who.replace('_', '-')} ({m['users']:,}) | "
                         + " | ".join(f"{m[f'{a}-{b}']:.4f}" for a, b in METRICS)
                         + f" | {'-' if valid is None else f'{valid:.4f}'}"
                         + f" | {'-' if eps is None else f'{eps:.2f}'} | `{r['commit'][:7]}` | `{r['command']}` |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consent-fraction", type=float, default=0.1)
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--point", nargs="+", action="append", default=[], metavar=("NAME", "KEY=VALUE"),
                        help="a federated point: its name, then run-config keys")  # fmt: skip
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="an existing consented-only checkpoint (make main's) instead of training one")  # fmt: skip
    parser.add_argument("--record", nargs=3, action="append", default=[], metavar=("NAME", "COMMAND", "RUN_DIR"),
                        help="a finished run to record (make main's), with the command that made it")  # fmt: skip
    parser.add_argument("--work", type=Path, default=Path("outputs/private_recipe"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    path = args.out / "private_recipe.json"
    report = json.loads(path.read_text()) if path.exists() else {"rows": []}
    report["provenance"] = prov = provenance()
    work = args.work.resolve()
    consent = args.consent_fraction

    def record(name: str, command: str, test: dict, **extra: object) -> None:
        row = {"name": name, "consent": consent, "command": command, "commit": prov["commit"], "test": test, **extra}
        report["rows"] = [r for r in report["rows"] if (r["name"], r["consent"]) != (name, consent)] + [row]
        write_json(args.out / "private_recipe.json", report)
        write_text(args.out / "private_recipe.md", markdown(report))

    record("popularity", "fedrec evaluate --baseline popularity", judge(None, consent))
    if args.pretrained is not None:
        pretrained, command = args.pretrained, f"fedrec train --consented-only ... --output {args.pretrained}"
    else:
        pretrained, command = pretrain(work, consent, args.pretrain_epochs)
    record(f"pretrained on consented ({args.pretrain_epochs} epochs)", command, judge(pretrained, consent))
    for name, command, run_dir in args.record:
        checkpoint, info = recorded_run(Path(run_dir))
        record(name, command, judge(checkpoint, consent), **info)
    for name, *keys in args.point:
        checkpoint, command, info = federate(work, name, pretrained, consent, keys)
        record(name, command, judge(checkpoint, consent), **info)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
