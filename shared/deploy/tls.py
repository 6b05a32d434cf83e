"""The SuperLink as its clients reach it: up (waited for), and its TLS certificate checked the way
a node or `flwr` will check it, before either relies on it.

Flower reports a CA that does not match as "connection unavailable" (`flwr`) or "could not
establish a connection" (a SuperNode), and the reason is nowhere. A TLS handshake of our own,
with the same CA and the host name the client dials, names it: another CA signed the
certificate, the certificate does not name that host, it has expired, or the SuperLink does
not speak TLS at all.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import time
from pathlib import Path

from cryptography import x509

from shared.errors import FedrecError

log = logging.getLogger(__name__)
TLS_FAILED = "TLS verification failed"


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FedrecError(f"SuperLink address '{address}': expected HOST:PORT")
    return host, int(port)


def wait_for_superlink(address: str, seconds: float, first_delay: float = 1.0) -> int:
    """Attempts until `address` accepts a TCP connection, doubling the delay (capped at 16 s)."""
    host, port = split_address(address)
    deadline, delay, attempts = time.monotonic() + seconds, first_delay, 0
    while True:
        attempts += 1
        try:
            with socket.create_connection((host, port), timeout=5):
                return attempts
        except OSError:
            if time.monotonic() + delay > deadline:
                raise FedrecError(
                    f"SuperLink {address} unreachable after {attempts} attempts over {seconds:.0f} s"
                ) from None
            log.warning("SuperLink %s unreachable (attempt %d); retrying in %.0f s", address, attempts, delay)
            time.sleep(delay)
            delay = min(delay * 2, 16.0)


def _handshake(host: str, port: int, context: ssl.SSLContext, timeout: float) -> bytes:
    """The DER certificate the server presents after a handshake under `context`."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            return tls.getpeercert(binary_form=True) or b""


def _unverified() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def presented_names(host: str, port: int, timeout: float = 10.0) -> list[str]:
    """The host names and addresses in the certificate the server presents, unverified: only to
    say what it names when it does not name the host dialled."""
    try:
        cert = x509.load_der_x509_certificate(_handshake(host, port, _unverified(), timeout))
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return []
    return [str(n.value) for n in names if isinstance(n, (x509.DNSName, x509.IPAddress))]


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def check_superlink_tls(address: str, ca: Path, timeout: float = 10.0) -> None:
    """A TLS handshake with the SuperLink at `address` that verifies its certificate against `ca`
    alone, for the host in `address`, as Flower's clients do. Raises one line naming why not."""
    host, port = split_address(address)
    try:
        context = ssl.create_default_context(cafile=str(ca))  # only this CA, not the system's
    except ssl.SSLError as err:
        raise FedrecError(f"CA certificate {ca}: unusable ({err.reason})") from None
    try:
        _handshake(host, port, context, timeout)
    except ssl.SSLCertVerificationError as err:
        raise FedrecError(f"{TLS_FAILED}: {_why(err, address, host, port, ca, timeout)}") from None
    except ssl.SSLError as err:  # no TLS on the other side (e.g. a SuperLink started with --insecure)
        raise FedrecError(f"{TLS_FAILED}: the SuperLink at {address} does not speak TLS ({err.reason}); "
                          "was it started with --insecure?") from None  # fmt: skip
    except OSError as err:
        raise FedrecError(f"SuperLink {address}: unreachable ({err.strerror or err})") from None


def _why(err: ssl.SSLCertVerificationError, address: str, host: str, port: int, ca: Path, timeout: float) -> str:
    code = getattr(err, "verify_code", 0)
    if code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
        names = presented_names(host, port, timeout)
        shown = f" (it names {', '.join(names)})" if names else ""
        flag = "--host " + host
        return (f"the SuperLink's certificate is not valid for {'address' if _is_address(host) else 'host'} "
                f"'{host}'{shown}: dial one of its names, or issue it again with `{flag}` (docs/deployment.md)")  # fmt: skip
    # Unable to get the (local) issuer certificate or verify the first one; or a CA of the same
    # name whose signature does not match (two development CAs are both "fedrec development CA").
    if code in (2, 7, 20, 21):
        return (f"the SuperLink at {address} presented a certificate that CA {ca} did not sign; "
                "pass the CA certificate that signed the SuperLink's (its ca.crt)")  # fmt: skip
    if code == 18:  # self-signed leaf
        return f"the SuperLink at {address} presented a self-signed certificate, not one signed by CA {ca}"
    if code == 10:
        return f"the SuperLink's certificate at {address} has expired; issue it again"
    return f"the SuperLink at {address}, checked against CA {ca}: {err.verify_message}"


def check_superlink_insecure(address: str, timeout: float = 10.0) -> None:
    """For a client started with --insecure: refuse a SuperLink that speaks TLS (the client would
    fail inside Flower, saying only that the connection is unavailable)."""
    host, port = split_address(address)
    try:
        _handshake(host, port, _unverified(), timeout)
    except (OSError, ssl.SSLError):
        return  # plain text (or unreachable: reported by whoever connects next)
    raise FedrecError(f"the SuperLink at {address} speaks TLS: pass --ca (the CA certificate that signed its "
                      "certificate) and --key instead of --insecure")  # fmt: skip
