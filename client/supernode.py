"""An edge node's SuperNode: the command that starts it, after checking what it will need.

Checked before anything starts, each as one line: the catalog (a `fedrec catalog build`
directory, unchanged since: its fingerprint is what the server's messages are compared with),
the node's data directory (its own interactions, every item in the catalog), its state directory (writable), its key and the CA certificate
(present, unexpired), and the SuperLink: reachable (retried with exponential backoff, then
reported), its certificate verified by the CA for the host dialled (shared/deploy/tls.py), and
this node's public key registered with it. Flower itself reports the last two only as "could not
establish a connection". Flower's own reconnection (`--max-wait-time`) covers a SuperLink lost later.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.atomic import check_writable
from shared.config import DataConfig
from shared.data.dataset import catalog_artifact, load_node_dataset
from shared.deploy.credentials import check_certificate, check_private_key
from shared.deploy.process import BIN
from shared.deploy.tls import check_superlink_insecure, check_superlink_tls, wait_for_superlink
from shared.errors import FedrecError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuperNodeConfig:
    superlink: str  # the SuperLink's Fleet API, host:port
    data_path: Path  # this node's private data (`fedrec data export-partition`)
    state_dir: Path  # this node's privacy accountant history; never leaves the node
    partition_id: int
    ca: Path | None  # the CA certificate that signed the SuperLink's; None: insecure
    key: Path | None  # this node's registered private key; None: insecure
    catalog: Path  # the federation's public catalog (`fedrec catalog build`), a copy on this node
    filters: DataConfig = DataConfig()  # min-interactions, rating-threshold for the startup check
    clientappio_port: int = 9094
    wait_seconds: float = 60.0  # how long to keep trying an unreachable SuperLink
    runtime_tls: tuple[Path, Path] | None = None  # cert, key for the node's own loopback runtime API


def check_node_data(cfg: SuperNodeConfig) -> tuple[int, str]:
    """Users in the node's data and the catalog's fingerprint, after checking that the catalog is
    intact and the data reads and uses only its items. Only these two directories are read."""
    if not cfg.data_path.is_dir():
        raise FedrecError(f"data-path {cfg.data_path}: no such directory")
    catalog = catalog_artifact(str(cfg.catalog.expanduser().resolve()))
    return load_node_dataset(cfg.data_path, cfg.filters, catalog).num_users, catalog.fingerprint


def node_key(key: Path) -> ec.EllipticCurvePrivateKey:
    """The node's private key, in the OpenSSH format flower-supernode reads."""
    try:
        private = serialization.load_ssh_private_key(key.read_bytes(), None)
    except (OSError, ValueError, TypeError):
        raise FedrecError(f"node key {key}: not an unencrypted OpenSSH private key (`deploy credentials` writes one)") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise FedrecError(f"node key {key}: not an elliptic-curve key, which node authentication requires")
    return private


def key_fingerprint(key: Path) -> str:
    """The public key's SHA256 fingerprint as `ssh-keygen -lf KEY.pub` prints it."""
    blob = node_key(key).public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    digest = hashlib.sha256(base64.b64decode(blob.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def check_registered(address: str, ca: Path, key: Path, wait: float = 0.0, first_delay: float = 2.0) -> int:
    """The SuperNode ID the SuperLink keeps for `key`'s public key. Found by doing what
    flower-supernode does first, activating the node, and undoing it at once (deactivating: the
    node goes offline until flower-supernode activates it again), because an unknown key is
    otherwise reported only as "could not establish a connection", its reason in the SuperLink's log.
    The SuperLink refuses a registered key too while it counts that node online: after an
    unclean stop (kill -9) for up to two missed heartbeats. So a refusal is retried, with
    backoff, for up to `wait` seconds (at most as long as that lasts) before it is reported."""
    import httpx
    from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL, HEARTBEAT_PATIENCE
    from flwr.proto.fleet_pb2 import ActivateNodeRequest, DeactivateNodeRequest
    from flwr.supercore.error import ApiErrorCode, FlowerError
    from flwr.supercore.interceptors.http.runtime_version import RuntimeVersionHttpInterceptor
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes
    from flwr.supernode.fleet_http_client import FleetHttpClient
    from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

    private = node_key(key)
    public = private.public_key()
    request = ActivateNodeRequest(public_key=public_key_to_bytes(public), heartbeat_interval=HEARTBEAT_DEFAULT_INTERVAL)
    auth = [RuntimeVersionHttpInterceptor(component_name="SuperNode"), NodeAuthHttpInterceptor(private, public)]
    online_for = HEARTBEAT_PATIENCE * HEARTBEAT_DEFAULT_INTERVAL + 5  # how long a killed node still counts online
    deadline, delay, started = time.monotonic() + min(wait, online_for), first_delay, time.monotonic()
    with FleetHttpClient.from_server_address(address, False, ca.read_bytes(), interceptors=auth) as client:
        while True:
            try:
                node_id = client.ActivateNode(request).node_id
                break
            except httpx.HTTPStatusError as err:
                error = FlowerError.from_json(err.response.text)
                if error is None or error.code != ApiErrorCode.FLEET_NODE_ACTIVATION_FAILED:
                    said = error.message if error is not None else f"HTTP {err.response.status_code}"
                    raise FedrecError(f"the SuperLink at {address} refused this node: {said}") from None
                if time.monotonic() + delay > deadline:
                    raise FedrecError(
                        f"the SuperLink at {address} refused this node: its public key ({key_fingerprint(key)}, the "
                        f"pair of {key}) is not registered. On the server: `flwr supernode register "
                        f"{key.with_suffix('.pub').name} CONNECTION` (docs/deployment.md). If it is registered, another "
                        f"SuperNode with this key is online (refused for {time.monotonic() - started:.0f} s)"
                    ) from None  # fmt: skip
                log.warning("SuperLink %s refused to activate this node's key: not registered, or the node still "
                            "counts as online after an unclean stop (for up to %d s); retrying in %.0f s",
                            address, online_for - 5, delay)  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 2, 16.0)
            except httpx.TransportError as err:
                raise FedrecError(f"SuperLink {address}: {err}") from None
        try:
            client.DeactivateNode(DeactivateNodeRequest(node_id=node_id))
        except httpx.HTTPError as err:
            raise FedrecError(f"SuperLink {address}: could not hand the node back after the check ({err})") from None
    return int(node_id)


def supernode_command(cfg: SuperNodeConfig) -> list[str]:
    """`flower-supernode ...` for `cfg`, everything it depends on checked first."""
    cmd = [str(BIN / "flower-supernode")]
    if cfg.ca is None or cfg.key is None:
        cmd.append("--insecure")
    else:
        check_certificate(cfg.ca, "CA certificate")
        check_private_key(cfg.key, "node key")
        node_key(cfg.key)
        cmd += ["--root-certificates", str(cfg.ca), "--auth-supernode-private-key", str(cfg.key)]
        if cfg.runtime_tls is not None:  # the SuperNode <-> ClientApp link, on this machine
            cert, key = cfg.runtime_tls
            check_certificate(cert, "node runtime certificate")
            check_private_key(key, "node runtime key")
            cmd += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--ssl-ca-certfile", str(cfg.ca)]
    users, fingerprint = check_node_data(cfg)
    check_writable(cfg.state_dir, "state-dir")
    log.info("node data %s: %d users on catalog %s (fingerprint %s; every message of a run is checked against it)",
             cfg.data_path, users, cfg.catalog, fingerprint)  # fmt: skip
    wait_for_superlink(cfg.superlink, cfg.wait_seconds)
    if cfg.ca is None or cfg.key is None:
        check_superlink_insecure(cfg.superlink)
    else:
        check_superlink_tls(cfg.superlink, cfg.ca)
        node_id = check_registered(cfg.superlink, cfg.ca, cfg.key, cfg.wait_seconds)
        log.info("SuperLink %s: certificate verified by %s; this node's key %s (%s) is registered as SuperNode %d",
                 cfg.superlink, cfg.ca, cfg.key, key_fingerprint(cfg.key), node_id)  # fmt: skip
    node_config = (f"partition-id={cfg.partition_id} data-path='{cfg.data_path.resolve()}' "
                   f"catalog-path='{cfg.catalog.expanduser().resolve()}' state-dir='{cfg.state_dir.resolve()}' "
                   # Its data is filtered as its operator set, in the startup check and in every run.
                   f"min-interactions={cfg.filters.min_interactions} rating-threshold={cfg.filters.rating_threshold}")  # fmt: skip
    return cmd + [
        "--superlink", cfg.superlink, "--node-config", node_config,
        "--isolation", "subprocess", "--port", str(cfg.clientappio_port),
        "--max-wait-time", str(int(cfg.wait_seconds)),
    ]  # fmt: skip
