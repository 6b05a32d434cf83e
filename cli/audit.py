"""`fedrec audit RUN_DIR`: the canary audit's epsilon lower bound for a federated run."""

from __future__ import annotations

import argparse

from cli.options import emit_json


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser("audit", help="95%% epsilon lower bound from a run's canaries (audit-canaries > 0)")
    cmd.add_argument("run_dir", metavar="RUN_DIR", help="a run made with audit-canaries > 0 (outputs/run-<id>)")
    cmd.add_argument("--json", default="", help="write the result as JSON (- for stdout)")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from shared.privacy.canary_audit import audit_run

    r = audit_run(args.run_dir)
    best = max(r["guesses"], key=lambda g: g["epsilon_lower_bound"])
    reported = "no DP" if r["reported_epsilon"] is None else f"{r['reported_epsilon']:.3f} (delta {r['delta']:.1e})"
    print(f"canary audit of {args.run_dir}: epsilon >= {r['epsilon_lower_bound']:.3f} at 95% confidence; "
          f"reported epsilon {reported}; {r['canaries']} canaries, {r['trained_on']} trained on; "
          f"best guess: {best['correct']} right of {best['top'] + best['bottom']}")  # fmt: skip
    emit_json(r, args.json)
    return 0
