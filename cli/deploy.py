"""`fedrec deploy ...`: credentials, a SuperLink, a SuperNode and the `flwr` connection for a
real deployment (README, "Edge deployment"). Each checks its inputs, then hands over to Flower."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.config import DataConfig
from shared.errors import FedrecError

INSECURE_WARNING = ("fedrec: warning: --insecure: no TLS and no node authentication; anyone who can "
                    "reach these ports can read model updates and join the federation")  # fmt: skip


def register(commands: argparse._SubParsersAction) -> None:
    deploy = commands.add_parser("deploy", help="run a real SuperLink and SuperNodes (TLS, node auth)")
    sub = deploy.add_subparsers(dest="deploy_command", required=True, metavar="ACTION")

    creds = sub.add_parser("credentials", help="a development CA, the SuperLink's certificate, node keys")
    creds.add_argument("--out", type=Path, required=True, help="directory to create")
    creds.add_argument("--nodes", type=int, help="node key pairs to create (with a new CA)")
    creds.add_argument("--add-nodes", type=int, metavar="N",
                       help="issue N more node key pairs into the existing --out, from its CA")  # fmt: skip
    creds.add_argument("--host", action="append", default=[], help="a SuperLink host name or IP (repeatable)")
    creds.add_argument("--days", type=int, default=365)
    creds.set_defaults(run=run_credentials)

    conn = sub.add_parser("connection", help="write a SuperLink connection into the Flower configuration")
    conn.add_argument("--name", required=True, help="the name `flwr run . NAME` will use")
    conn.add_argument("--address", required=True, help="the SuperLink, host:port")
    conn.add_argument("--ca", type=Path, help="the CA certificate that signed the SuperLink's")
    conn.add_argument("--wait", type=float, default=30.0,
                      help="seconds to wait for the SuperLink, to check its certificate (then written unchecked)")  # fmt: skip
    conn.add_argument("--insecure", action="store_true")
    conn.set_defaults(run=run_connection)

    link = sub.add_parser("superlink", help="start a SuperLink (TLS + node authentication)")
    link.add_argument("--credentials", type=Path, help="directory with ca.crt, superlink.crt, superlink.key")
    link.add_argument("--state-dir", type=Path, required=True)
    link.add_argument("--host", default="",
                      help="the interface to listen on, required: one address (e.g. the one nodes reach), "
                           "or 0.0.0.0 for every interface of this machine")  # fmt: skip
    link.add_argument("--port", type=int, default=9093)
    link.add_argument("--insecure", action="store_true")
    link.set_defaults(run=run_superlink)

    node = sub.add_parser("supernode", help="start an edge node's SuperNode on its own data")
    node.add_argument("--superlink", required=True, help="the SuperLink, host:port")
    node.add_argument("--data-path", type=Path, required=True, help="this node's own data: its users only")
    node.add_argument("--catalog", type=Path, required=True,
                      help="the federation's public catalog (`fedrec catalog build`), copied to this node")  # fmt: skip
    node.add_argument("--state-dir", type=Path, required=True, help="this node's privacy state")
    node.add_argument("--partition-id", type=int, required=True, help="this node's number (seeds, state file)")
    node.add_argument("--ca", type=Path, help="the CA certificate that signed the SuperLink's")
    node.add_argument("--key", type=Path, help="this node's registered private key")
    node.add_argument("--runtime-cert", type=Path, help="this node's TLS certificate for its local runtime API")
    node.add_argument("--runtime-key", type=Path, help="... and its key (both from `deploy credentials`)")
    node.add_argument("--clientappio-port", type=int, default=9094)
    node.add_argument("--wait", type=float, default=60.0, help="seconds to keep retrying the SuperLink")
    node.add_argument("--insecure", action="store_true")
    # The node's own privacy policy (client/policy.py): what it refuses whatever the server asks.
    # Written to STATE_DIR/privacy-policy.json; options not given keep the file's (or the strict
    # defaults: DP required, epsilon 8, delta 1e-6, clipping norm 1, metrics of 20 users or more).
    node.add_argument("--dp-required", action=argparse.BooleanOptionalAction, default=None,
                      help="refuse runs without DP-SGD (default: required)")
    node.add_argument("--max-epsilon", type=float, help="this node's privacy budget over all runs (default 8)")
    node.add_argument("--max-delta", type=float, help="the largest delta it accepts (default 1e-6)")
    node.add_argument("--min-noise-multiplier", type=float, help="the smallest sigma it accepts (default 0: calibrated)")
    node.add_argument("--max-grad-norm", type=float, help="the largest clipping norm it accepts (default 1)")
    node.add_argument("--min-eval-users", type=int,
                      help="the fewest users whose mean evaluation metrics it sends (default 20)")
    node.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=None,
                      help="answer evaluation requests at all (default: yes; the metrics carry no DP noise)")
    node.add_argument("--audit-messages", action=argparse.BooleanOptionalAction, default=None,
                      help="write the shape of every reply to STATE_DIR/messages-*.jsonl, whatever the run asks")
    node.add_argument("--max-popularity-epsilon", type=float,
                      help="the most of its budget it spends releasing noisy item counts for the popularity "
                           "prior, once a run (default 0: never)")
    # The node's own filters: the startup check and every run use them, whatever the run config says.
    node.add_argument("--min-interactions", type=int, default=5,
                      help="users with fewer interactions are dropped, in every run (the run config's is ignored)")
    node.add_argument("--rating-threshold", type=float, default=0.0,
                      help="ratings below it are not interactions, in every run (the run config's is ignored)")
    node.set_defaults(run=run_supernode)


def _insecure(args: argparse.Namespace, given: bool) -> bool:
    if args.insecure:
        print(INSECURE_WARNING, file=sys.stderr)
        return True
    if not given:
        raise FedrecError("TLS credentials are required (or pass --insecure, for a trusted test network only)")
    return False


def run_credentials(args: argparse.Namespace) -> int:
    from shared.deploy.credentials import add_node_keys, make_credentials

    if (args.nodes is None) == (args.add_nodes is None):
        raise FedrecError("credentials: give --nodes N (a new directory) or --add-nodes N (an existing one)")
    if args.add_nodes is not None:
        if args.host:
            raise FedrecError("--host names the SuperLink's certificate, made with the directory; "
                              "--add-nodes issues node keys only")  # fmt: skip
        paths = add_node_keys(args.out, args.add_nodes, args.days)
        nodes = [p.stem for p in paths if p.suffix == ".pub"]
        print(f"added {', '.join(nodes)} to {args.out} (a key pair and a runtime certificate each, from its CA): "
              f"register each public key, e.g. `flwr supernode register {args.out / nodes[0]}.pub CONNECTION`")  # fmt: skip
        return 0
    paths = make_credentials(args.out, args.nodes, args.host or ["127.0.0.1", "localhost"], args.days)
    print(f"wrote {len(paths)} files to {args.out} (development CA: bring your own PKI in production)")
    return 0


def run_connection(args: argparse.Namespace) -> int:
    from flwr.cli.flower_config import write_superlink_connection
    from flwr.cli.typing import SuperLinkConnection

    from shared.deploy.credentials import check_certificate

    insecure = _insecure(args, args.ca is not None)
    if not insecure:
        check_certificate(args.ca, "CA certificate")
    _check_link(args.address, None if insecure else args.ca, args.wait)
    write_superlink_connection(SuperLinkConnection(
        name=args.name, address=args.address, insecure=insecure,
        root_certificates=None if insecure else str(args.ca.resolve()),
    ))  # fmt: skip
    print(f"connection '{args.name}' -> {args.address}: use `flwr run . {args.name}`")
    return 0


def _check_link(address: str, ca: Path | None, wait: float) -> None:
    """`flwr` reports a CA that does not verify the SuperLink as "connection unavailable"; check
    it now, while the connection is written, once the SuperLink is up (within `wait` seconds; a
    SuperLink not up by then is said to be unchecked, and the connection written anyway)."""
    from shared.deploy.tls import check_superlink_insecure, check_superlink_tls, wait_for_superlink

    try:
        wait_for_superlink(address, wait)
    except FedrecError as err:
        print(f"fedrec: warning: {err}: its certificate is not checked; run this again once it is up",
              file=sys.stderr)  # fmt: skip
        return
    if ca is None:
        check_superlink_insecure(address)
    else:
        check_superlink_tls(address, ca)


def run_superlink(args: argparse.Namespace) -> int:
    from server.superlink import SuperLinkConfig, superlink_command
    from shared.deploy.process import exec_command

    insecure = _insecure(args, args.credentials is not None)
    cfg = SuperLinkConfig(None if insecure else args.credentials, args.state_dir, args.host, args.port)
    cmd = superlink_command(cfg)
    everywhere = " (every interface of this machine)" if args.host in ("0.0.0.0", "::") else ""
    print(f"fedrec: SuperLink listening on {args.host}:{args.port}{everywhere}. Nodes, `flwr` and the ServerApp all "
          f"use this one TCP port: open {args.port} to the node and operator hosts, and nothing else", file=sys.stderr)
    exec_command(cmd)
    return 0  # not reached


def _filters(args: argparse.Namespace) -> DataConfig:
    return DataConfig(min_interactions=args.min_interactions, rating_threshold=args.rating_threshold)


def run_supernode(args: argparse.Namespace) -> int:
    from client.supernode import SuperNodeConfig, supernode_command
    from shared.deploy.process import exec_command

    insecure = _insecure(args, args.ca is not None and args.key is not None)
    from client.policy import set_policy

    policy = set_policy(args.state_dir, {k: getattr(args, k) for k in
                                         ("dp_required", "max_epsilon", "max_delta", "min_noise_multiplier",
                                          "max_grad_norm", "min_eval_users", "evaluate", "audit_messages",
                                          "max_popularity_epsilon")})  # fmt: skip
    print(f"privacy policy of this node ({args.state_dir}): {policy.to_json()}", file=sys.stderr)
    cfg = SuperNodeConfig(args.superlink, args.data_path, args.state_dir, args.partition_id,
                          None if insecure else args.ca, None if insecure else args.key,
                          args.catalog, _filters(args), args.clientappio_port, args.wait,
                          (args.runtime_cert, args.runtime_key) if args.runtime_cert and args.runtime_key else None)  # fmt: skip
    exec_command(supernode_command(cfg))
    return 0  # not reached
