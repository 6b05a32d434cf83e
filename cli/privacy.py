"""`fedrec privacy-report RUN_DIR`: the privacy officer's JSON and HTML for a finished run."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser("privacy-report", help="privacy_report.json and .html for a run")
    cmd.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run's output directory")
    cmd.add_argument("--out", type=Path, default=None, help="where to write (default: RUN_DIR)")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from server.privacy_report import write_report

    report = write_report(args.run_dir, args.out)
    q = report["epsilon_quantiles"]
    print(f"{report['num_clients']} clients, unit {report['unit']}, {report['neighbouring_relation']} adjacency, "
          f"accountant {report['accountant']}: "
          f"epsilon median {q['p50']:.3f}, max {q['p100']:.3f}, delta <= {report['delta']:.2e}; "
          f"status {report['status_counts']}")
    print(f"wrote {(args.out or args.run_dir) / 'privacy_report.json'} and privacy_report.html")
    return 0
