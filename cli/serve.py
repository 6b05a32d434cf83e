"""`fedrec serve`: a long-running HTTP service over one checkpoint (shared.serving)."""

from __future__ import annotations

import argparse
import socket

from shared.errors import FedrecError

DEFAULT_HOST = "127.0.0.1"  # loopback: exposing the service is a deliberate --host 0.0.0.0
DEFAULT_PORT = 8000


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser("serve", help="an HTTP service answering /recommend, /search, /explain")
    cmd.add_argument("--checkpoint", required=True, help="trained model directory")
    cmd.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    cmd.add_argument("--port", type=int, default=DEFAULT_PORT)
    cmd.add_argument("--dataset", default="",
                     help="the dataset whose users /recommend?user=ID serves (loaded once at start; "
                          "without it the service answers histories only)")  # fmt: skip
    cmd.add_argument("--path", default="", help="dataset directory (implies --dataset, the checkpoint's by default)")
    cmd.add_argument("--cache-dir", default="")
    cmd.add_argument("--threads", type=int, default=1,
                     help="torch threads (default 1: a pass over a batch of requests is small work, and "
                          "on a few cores the event loop needs the other one)")  # fmt: skip
    cmd.add_argument("--no-search", action="store_true", help="do not load MiniLM (no /search)")
    cmd.set_defaults(run=run)


def check_address(host: str, port: int) -> None:
    """One line now, rather than a server that logs a bind error and exits later."""
    if not 1 <= port <= 65535:
        raise FedrecError(f"--port must be between 1 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise FedrecError(f"--host {host}: {err.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise FedrecError(f"--host {host} --port {port}: cannot listen there ({err.strerror})") from None


def serve(service: object, host: str, port: int) -> None:
    """Run uvicorn over `service` until SIGINT or SIGTERM."""
    import uvicorn

    from shared.serving.http import create_app

    print(f"fedrec: serving on http://{host}:{port} (GET /health, /recommend, /search, /explain)", flush=True)
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning", access_log=False)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    check_address(args.host, args.port)
    if args.threads < 1:
        raise FedrecError(f"--threads must be at least 1, got {args.threads}")
    from shared.serving.service import load_service

    serve(load_service(args.checkpoint, args.dataset, args.path, args.cache_dir, args.threads, not args.no_search),
          args.host, args.port)  # fmt: skip
    return 0
