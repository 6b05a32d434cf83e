"""Development credentials for a deployment: a CA, the SuperLink's TLS certificate, node keys.

`fedrec deploy credentials` writes, into one directory:
  ca.crt, ca.key            a private certificate authority (development only)
  superlink.crt/.key        the SuperLink's certificate, signed by the CA, for the given hosts
  node-K.key, node-K.pub    SuperNode K's EC key pair (OpenSSH format, NIST P-384), what
                            `flwr supernode register` and `flower-supernode` take
  node-K-tls.crt/.key       SuperNode K's certificate for its own runtime API (the loopback
                            link to the ClientApp processes it starts), so that link is TLS too
`--add-nodes N` issues N more node key pairs (and runtime certificates, signed by the same CA)
into an existing directory, numbered after the last, for a node that joins later or a key that
is rotated. Production operators bring certificates from their own PKI; `check_certificate`
validates either kind before a process starts, so an expired or missing file is one clear line.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.atomic import atomic_path
from shared.errors import FedrecError

CA, SUPERLINK = "ca", "superlink"


def node_key_paths(directory: Path, node: int) -> tuple[Path, Path]:
    return directory / f"node-{node}.key", directory / f"node-{node}.pub"


def node_tls_paths(directory: Path, node: int) -> tuple[Path, Path]:
    return directory / f"node-{node}-tls.crt", directory / f"node-{node}-tls.key"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, days: int, hosts: list[str] | None,
                 not_before: dt.datetime) -> x509.Certificate:  # fmt: skip
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_before + dt.timedelta(days=days)))  # fmt: skip
    if hosts is None:  # the CA
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def make_credentials(out: Path, nodes: int, hosts: list[str], days: int = 365,
                     not_before: dt.datetime | None = None) -> list[Path]:  # fmt: skip
    """Write the development credentials into `out` (which must not exist); their paths."""
    if out.exists():
        raise FedrecError(f"{out}: already exists (credentials are never overwritten; "
                          "`--add-nodes N` issues N more node keys into it)")  # fmt: skip
    if nodes < 1 or days < 1 or not hosts:
        raise FedrecError("credentials need --nodes >= 1, --days >= 1 and at least one --host")
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    ca_key, link_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca = _certificate("fedrec development CA", ca_key, _name("fedrec development CA"), ca_key, days, None, start)
    link = _certificate(hosts[0], link_key, ca.subject, ca_key, days, hosts, start)
    with atomic_path(out) as staged:
        staged.mkdir()
        files = {f"{CA}.crt": ca.public_bytes(serialization.Encoding.PEM), f"{CA}.key": _pem_key(ca_key),
                 f"{SUPERLINK}.crt": link.public_bytes(serialization.Encoding.PEM),
                 f"{SUPERLINK}.key": _pem_key(link_key)}  # fmt: skip
        for k in range(nodes):
            files.update(_node_files(k, ca, ca_key, days, start))
        _write(staged, files)
    return [out / name for name in files]


def _node_files(k: int, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, days: int,
                start: dt.datetime) -> dict[str, bytes]:  # fmt: skip
    """Node k's files: its authentication key pair (OpenSSH: what `flwr supernode register` and
    flower-supernode take) and its loopback runtime certificate, signed by the CA."""
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = node_key_paths(Path(), k)
    tls_key = ec.generate_private_key(ec.SECP384R1())
    tls = _certificate(f"fedrec node {k}", tls_key, ca.subject, ca_key, days, ["127.0.0.1", "localhost"], start)
    cert_path, key_path = node_tls_paths(Path(), k)
    return {
        str(private): key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                        serialization.NoEncryption()),
        str(public): key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n",
        str(cert_path): tls.public_bytes(serialization.Encoding.PEM),
        str(key_path): _pem_key(tls_key),
    }  # fmt: skip


def _write(directory: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(0o600 if name.endswith(".key") else 0o644)


NODE_FILE = re.compile(r"node-(\d+)\.(key|pub)$")


def add_node_keys(directory: Path, count: int, days: int = 365,
                  not_before: dt.datetime | None = None) -> list[Path]:  # fmt: skip
    """Issue `count` more node key pairs (and runtime certificates) into an existing credentials
    directory, signed by its CA, numbered after the highest node there; nothing is overwritten.
    Their paths."""
    ca_cert, ca_key_path = directory / f"{CA}.crt", directory / f"{CA}.key"
    if count < 1 or days < 1:
        raise FedrecError("adding node keys needs --add-nodes >= 1 and --days >= 1")
    ca = check_certificate(ca_cert, "CA certificate")
    check_private_key(ca_key_path, "CA key")
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or ca_key.public_key() != ca.public_key():
        raise FedrecError(f"CA key {ca_key_path}: not the key of {ca_cert}")
    taken = [int(m.group(1)) for p in directory.iterdir() if (m := NODE_FILE.match(p.name))]
    first = max(taken, default=-1) + 1
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    files: dict[str, bytes] = {}
    for k in range(first, first + count):
        files.update(_node_files(k, ca, ca_key, days, start))
    clash = [n for n in files if (directory / n).exists()]
    if clash:  # e.g. a stray node-K-tls.crt without its key pair
        raise FedrecError(f"{directory / clash[0]}: already exists (credentials are never overwritten)")
    _write(directory, files)
    return [directory / name for name in files]


def check_certificate(path: Path, what: str, now: dt.datetime | None = None) -> x509.Certificate:
    """The PEM certificate at `path`, refused if missing, unreadable, not yet valid or expired."""
    if not path.is_file():
        raise FedrecError(f"{what} {path}: no such file")
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise FedrecError(f"{what} {path}: not a PEM certificate") from None
    now = now or dt.datetime.now(dt.timezone.utc)
    if now > cert.not_valid_after_utc:
        raise FedrecError(f"{what} {path}: expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if now < cert.not_valid_before_utc:
        raise FedrecError(f"{what} {path}: not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    return cert


def check_private_key(path: Path, what: str) -> None:
    """An existing, readable private key (PEM or OpenSSH)."""
    if not path.is_file():
        raise FedrecError(f"{what} {path}: no such file")
    data = path.read_bytes()
    loaders = (serialization.load_ssh_private_key, serialization.load_pem_private_key)
    for load in loaders:
        try:
            load(data, None)
            return
        except (ValueError, TypeError):
            continue
    raise FedrecError(f"{what} {path}: not a readable, unencrypted private key")
