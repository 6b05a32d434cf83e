"""Scale: seconds per round and peak memory for 100, 1,000 and 6,040 simulated clients.

    python -m simulations.scale [--clients 100 1000 6040] [--fraction 0.05] [--rounds 4] [--repeats 3]

One client per ML-1M user (the first N users when N < 6,040: `max-users`), the same fraction of
them sampled for training and validation each round, no DP (local work one user's batches).
Seconds per round: each run's median over the rounds after the first (actors starting), then
the median over --repeats whole runs; peak memory: the largest of the runs, the whole
simulation's process tree with Ray's daemons. Each size's row is kept as it finishes, so an
interrupted sweep resumes with the sizes still missing (or measured with fewer runs).
Writes simulations/results/scale.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from simulations.federated import run_repeated
from simulations.provenance import provenance, provenance_lines, write_results

RESULTS = Path(__file__).parent / "results"


def markdown(report: dict) -> str:
    p = report["provenance"]
    rows = [f"| {r['clients']:,} | {r['sampled_per_round']} | {r.get('repeats', 1)} | {r['seconds_per_round_after_first']:.1f} "
            f"| {r['peak_rss_mib']:,} | {r['wall_seconds'] / 60:.1f} | `{r.get('commit', p['commit'])[:7]}` |"
            for r in sorted(report["rows"], key=lambda r: r["clients"])]  # fmt: skip
    return "\n".join([
        "# Scale: one simulated client per user", "",
        *provenance_lines(p), "",
        f"ML-1M, {report['fraction']:g} of the clients trained and validated per round, {report['rounds']} rounds, "
        "no DP; the final test evaluation asks every client. s/round: the median over runs of each run's "
        "median round after the first; whole run: the median run.", "",
        "| clients | sampled per round | runs | s/round (median after the first) | peak RSS MiB | whole run, min | commit |",
        "|---|---|---|---|---|---|---|", *rows,
    ]) + "\n"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 6040])
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    path = args.out / "scale.json"
    report = json.loads(path.read_text()) if path.exists() else {"rows": []}
    started = provenance()  # the code that runs, whatever the tree holds by the end
    report.update(provenance=started, fraction=args.fraction, rounds=args.rounds)
    for n in args.clients:
        if any(r["clients"] == n and r.get("repeats", 1) >= args.repeats for r in report["rows"]):
            continue
        print(f"scale: {n} clients", flush=True)
        overrides = ["partitioning=user", f"max-users={n}", f"fraction-train={args.fraction}",
                     f"fraction-evaluate={args.fraction}", "min-train-nodes=2", "dp=false",
                     f"num-server-rounds={args.rounds}"]  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="fedrec-scale-") as tmp:
            row = run_repeated(f"{n} clients", overrides, Path(tmp), args.repeats, skip_first=True)
        report["rows"] = [r for r in report["rows"] if r["clients"] != n] + [
            {**row, "clients": n, "sampled_per_round": max(2, int(n * args.fraction)), "commit": started["commit"],
             "seconds_per_round_after_first": row["seconds_per_round_median"]}]  # fmt: skip
        write_results(args.out, "scale", report, markdown(report), quiet=True)  # each size kept as it finishes
    write_results(args.out, "scale", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
