"""Errors an operator can act on: a CA that does not verify the SuperLink, a certificate that does
not name the host dialled, a SuperLink without TLS, a node key that is not registered. Each is one
line, exit status 2, before anything starts; checked against a local HTTPS server standing in for
the SuperLink (the real one is in tests/test_deployment.py)."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import make_tiny, write_csv
from flwr.proto.fleet_pb2 import ActivateNodeResponse, DeactivateNodeResponse

from client.supernode import check_registered, key_fingerprint
from cli import main
from shared.deploy.credentials import make_credentials
from shared.deploy.tls import check_superlink_insecure, check_superlink_tls
from shared.errors import FedrecError

NOT_ACTIVATED = {"code": 2004, "detail": "Failed to activate SuperNode."}  # Flower 1.42's answer to an unknown key


class FakeFleet(BaseHTTPRequestHandler):
    """Answers Flower's Fleet HTTP API as `server.answers` says: activate-node with a node ID (or
    `NOT_ACTIVATED`), deactivate-node with success. Records each path."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.calls.append(self.path)  # type: ignore[attr-defined]
        answer = self.server.answers[self.path]  # type: ignore[attr-defined]
        status, body, kind = answer.pop(0) if isinstance(answer, list) else answer  # a list: one answer per call
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # quiet
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gives up the handshake (as the checks do on a bad certificate)


def serve(creds: Path | None) -> ThreadingHTTPServer:
    """A server on a free loopback port, with TLS from `creds` (its superlink.crt/.key) or without."""
    server = QuietServer(("127.0.0.1", 0), FakeFleet)
    server.calls, server.answers = [], {
        "/v1/fleet/activate-node": (200, ActivateNodeResponse(node_id=4242).SerializeToString(), "application/protobuf"),
        "/v1/fleet/deactivate-node": (200, DeactivateNodeResponse().SerializeToString(), "application/protobuf"),
    }  # fmt: skip
    if creds is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(creds / "superlink.crt", creds / "superlink.key")
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def creds(tmp_path: Path) -> dict[str, Path]:
    """The federation's credentials, another federation's, and a set whose certificate names only
    `localhost`."""
    sets = {"ours": ["127.0.0.1", "localhost"], "theirs": ["127.0.0.1"], "localhost-only": ["localhost"]}
    for name, hosts in sets.items():
        make_credentials(tmp_path / name, 1, hosts)
    return {name: tmp_path / name for name in sets}


@pytest.fixture
def link(creds):  # the SuperLink: our credentials, TLS
    server = serve(creds["ours"])
    yield server, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_right_ca_verifies_and_the_wrong_one_says_tls_verification_failed(creds, link) -> None:
    _, address = link
    check_superlink_tls(address, creds["ours"] / "ca.crt")
    with pytest.raises(FedrecError) as err:
        check_superlink_tls(address, creds["theirs"] / "ca.crt")
    assert str(err.value).startswith("TLS verification failed: ")
    assert f"presented a certificate that CA {creds['theirs'] / 'ca.crt'} did not sign" in str(err.value)


def test_a_certificate_that_does_not_name_the_host_dialled_says_which_names_it_has(creds) -> None:
    server = serve(creds["localhost-only"])
    try:
        with pytest.raises(FedrecError) as err:
            check_superlink_tls(f"127.0.0.1:{server.server_address[1]}", creds["localhost-only"] / "ca.crt")
    finally:
        server.shutdown()
    assert str(err.value).startswith("TLS verification failed: the SuperLink's certificate is not valid for address "
                                     "'127.0.0.1' (it names localhost)")  # fmt: skip
    assert "--host 127.0.0.1" in str(err.value)


def test_tls_against_a_plain_superlink_and_plain_against_a_tls_one(creds, link) -> None:
    plain = serve(None)
    try:
        with pytest.raises(FedrecError, match="TLS verification failed: .* does not speak TLS .*--insecure"):
            check_superlink_tls(f"127.0.0.1:{plain.server_address[1]}", creds["ours"] / "ca.crt")
        check_superlink_insecure(f"127.0.0.1:{plain.server_address[1]}")
    finally:
        plain.shutdown()
    with pytest.raises(FedrecError, match="speaks TLS: pass --ca"):
        check_superlink_insecure(link[1])


def test_a_registered_key_is_activated_and_handed_back_an_unknown_one_is_named(creds, link) -> None:
    server, address = link
    key = creds["ours"] / "node-0.key"
    assert check_registered(address, creds["ours"] / "ca.crt", key) == 4242
    assert server.calls == ["/v1/fleet/activate-node", "/v1/fleet/deactivate-node"]  # online, then offline again
    server.answers["/v1/fleet/activate-node"] = (412, json.dumps(NOT_ACTIVATED).encode(), "application/json")
    with pytest.raises(FedrecError) as err:
        check_registered(address, creds["ours"] / "ca.crt", key)
    text = str(err.value)
    assert f"its public key ({key_fingerprint(key)}, the pair of {key}) is not registered" in text
    assert "flwr supernode register node-0.pub" in text and "\n" not in text


def test_a_key_refused_while_its_killed_node_still_counts_online_is_retried(creds, link) -> None:
    server, address = link
    activated = server.answers["/v1/fleet/activate-node"]
    server.answers["/v1/fleet/activate-node"] = [(412, json.dumps(NOT_ACTIVATED).encode(), "application/json"), activated]
    assert check_registered(address, creds["ours"] / "ca.crt", creds["ours"] / "node-0.key", wait=5, first_delay=0.1) == 4242
    assert server.calls == ["/v1/fleet/activate-node"] * 2 + ["/v1/fleet/deactivate-node"]


def test_the_fingerprint_is_ssh_keygens(creds) -> None:
    import base64
    import hashlib

    blob = base64.b64decode((creds["ours"] / "node-0.pub").read_text().split()[1])
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert key_fingerprint(creds["ours"] / "node-0.key") == expected


@pytest.fixture
def node_files(tmp_path: Path) -> Path:
    source = write_csv(make_tiny(num_users=12, num_items=30), tmp_path / "global")
    assert main(["data", "export-partition", "--dataset", "csv", "--path", str(source), "--partitioning", "iid",
                 "--num-partitions", "2", "--partition-id", "0", "--out", str(tmp_path / "node")]) == 0  # fmt: skip
    assert main(["catalog", "build", "--dataset", "csv", "--path", str(source), "--out", str(tmp_path / "catalog")]) == 0
    return tmp_path


def last_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_deploy_supernode_checks_the_ca_and_the_key_before_it_starts(creds, link, node_files, capsys) -> None:
    server, address = link

    def supernode(ca: Path) -> int:
        return main(["deploy", "supernode", "--superlink", address, "--data-path", str(node_files / "node"),
                     "--catalog", str(node_files / "catalog"), "--state-dir", str(node_files / "state"),
                     "--partition-id", "0", "--ca", str(ca), "--key", str(creds["ours"] / "node-0.key"), "--wait", "2"])  # fmt: skip

    assert supernode(creds["theirs"] / "ca.crt") == 2
    assert last_line(capsys).startswith("fedrec: error: TLS verification failed: ")
    assert server.calls == []  # nothing was sent under a CA that does not verify the SuperLink
    server.answers["/v1/fleet/activate-node"] = (412, json.dumps(NOT_ACTIVATED).encode(), "application/json")
    assert supernode(creds["ours"] / "ca.crt") == 2
    assert "is not registered" in last_line(capsys)


def test_deploy_connection_checks_the_ca_and_writes_nothing_when_it_fails(creds, link, tmp_path, monkeypatch,
                                                                          capsys) -> None:  # fmt: skip
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    _, address = link
    args = ["deploy", "connection", "--name", "edge", "--address", address, "--ca"]
    assert main([*args, str(creds["theirs"] / "ca.crt")]) == 2
    assert last_line(capsys).startswith("fedrec: error: TLS verification failed: ")
    assert not (tmp_path / "flwr-home").exists() or "edge" not in "".join(
        p.read_text() for p in (tmp_path / "flwr-home").rglob("*.toml"))  # fmt: skip
    assert main([*args, str(creds["ours"] / "ca.crt")]) == 0
    assert "edge" in "".join(p.read_text() for p in (tmp_path / "flwr-home").rglob("*.toml"))
