"""The deployment SuperLink: the command that starts it, checked before it starts.

Flower 1.42 serves every API (Fleet for SuperNodes, Control for `flwr`, Runtime for the
ServerApp) over HTTPS on one host:port. TLS on all of them,
SuperNode authentication by registered public keys (`flwr supernode register`), and this
environment's packages for the ServerApp (no per-run `uv sync` of the app's dependencies).
`insecure` drops TLS and authentication; callers warn about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.deploy.credentials import CA, SUPERLINK, check_certificate, check_private_key
from shared.deploy.process import BIN
from shared.errors import FedrecError


@dataclass(frozen=True)
class SuperLinkConfig:
    credentials: Path | None  # ca.crt, superlink.crt, superlink.key; None: insecure
    state_dir: Path  # the SuperLink's database (runs, registered nodes)
    host: str = ""  # the interface every API listens on: chosen by the operator, never implied
    port: int = 9093


def superlink_command(cfg: SuperLinkConfig) -> list[str]:
    """`flower-superlink ...` for `cfg`; missing or expired credentials are refused here."""
    cmd = [str(BIN / "flower-superlink")]
    if cfg.credentials is None:
        cmd.append("--insecure")
    else:
        ca, cert, key = (cfg.credentials / f"{CA}.crt", cfg.credentials / f"{SUPERLINK}.crt",
                         cfg.credentials / f"{SUPERLINK}.key")  # fmt: skip
        check_certificate(ca, "CA certificate")
        check_certificate(cert, "SuperLink certificate")
        check_private_key(key, "SuperLink key")
        cmd += ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                "--enable-supernode-auth"]  # fmt: skip
    if not cfg.host:
        raise FedrecError("--host is required: the interface to listen on (an address the nodes reach, or 0.0.0.0 "
                          "for every interface of this machine)")  # fmt: skip
    try:
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FedrecError(f"state directory {cfg.state_dir}: {err.strerror}") from None
    return cmd + [
        "--disable-runtime-dependency-installation", "--isolation", "subprocess",
        "--database", str(cfg.state_dir / "superlink.db"),
        "--host", cfg.host, "--port", str(cfg.port),
    ]  # fmt: skip
