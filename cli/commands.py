"""The `fedrec` command line: one sub-command per job, each a thin shell around `shared/`,
`client/` and `server/`.

User mistakes (`FedrecError`) become one line on stderr and exit status 2; nothing else is caught,
so a real bug keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cli import audit, catalog, data, deploy, evaluate, privacy, recommend, search, serve, simulate, train
from shared.errors import FedrecError

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedrec", description="Federated, privacy-preserving two-stage recommender."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data.register(commands)
    catalog.register(commands)
    evaluate.register(commands)
    train.register(commands)
    recommend.register(commands)
    search.register(commands)
    serve.register(commands)
    simulate.register(commands)
    privacy.register(commands)
    deploy.register(commands)
    audit.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # the CLI owns the process: replace handlers a library may have set
    )
    try:
        return int(args.run(args) or 0)
    except FedrecError as err:
        print(f"fedrec: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("fedrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
