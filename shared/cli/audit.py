"""`fedrec audit --checkpoint DIR`: a membership-inference attack against a trained model."""

from __future__ import annotations

import argparse

from shared.cli.options import add_data_options, data_config, emit_json
from shared.data.dataset import load_dataset


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser("audit", help="membership-inference attack AUC (0.5: nothing leaks)")
    add_data_options(cmd)
    cmd.add_argument("--checkpoint", required=True, help="a trained model directory (e.g. outputs/run-<id>/round-005)")
    cmd.add_argument("--max-users", type=int, default=0, help="audit a sample of users (0: all)")
    cmd.add_argument("--bootstraps", type=int, default=200)
    cmd.add_argument("--json", default="", help="write the result as JSON (- for stdout)")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from shared.models.checkpoint import check_catalog, load_checkpoint
    from shared.privacy.audit import membership_audit

    model = load_checkpoint(args.checkpoint)
    dataset = load_dataset(data_config(args))
    check_catalog(model, dataset)
    result = membership_audit(model, dataset, args.max_users, args.bootstraps)
    print(f"membership inference on {args.checkpoint}: AUC {result['auc']:.3f} "
          f"(95% CI {result['ci_low']:.3f}-{result['ci_high']:.3f}, {result['users']:,} users; 0.5 = no leak)")  # fmt: skip
    emit_json(result, args.json)
    return 0
