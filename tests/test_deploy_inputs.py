"""`fedrec deploy` refuses bad input before any process starts: one line, exit status 2."""

import datetime as dt
from pathlib import Path

import pytest
from conftest import make_tiny, write_csv

from cli import main
from shared.deploy.credentials import make_credentials
from cli.local.superlink import free_port


@pytest.fixture
def setup(tmp_path: Path):
    source = write_csv(make_tiny(num_users=12, num_items=30), tmp_path / "global")
    assert main(["data", "export-partition", "--dataset", "csv", "--path", str(source), "--partitioning", "iid",
                 "--num-partitions", "2", "--partition-id", "0", "--out", str(tmp_path / "node")]) == 0  # fmt: skip
    assert main(["catalog", "build", "--dataset", "csv", "--path", str(source), "--out", str(tmp_path / "catalog")]) == 0
    make_credentials(tmp_path / "creds", 1, ["127.0.0.1"])
    return source, tmp_path


def node(source: Path, tmp: Path, **over: str) -> list[str]:
    args = {"--superlink": f"127.0.0.1:{free_port()}", "--data-path": str(tmp / "node"),
            "--state-dir": str(tmp / "state"), "--partition-id": "0", "--ca": str(tmp / "creds" / "ca.crt"),
            "--key": str(tmp / "creds" / "node-0.key"), "--wait": "2", "--catalog": str(tmp / "catalog"),
            **over}  # fmt: skip
    return ["deploy", "supernode", *(x for kv in args.items() for x in kv)]


def one_line_error(capsys, expected: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("fedrec: error:") and expected in err[-1], err
    assert "Traceback" not in "\n".join(err)


@pytest.mark.parametrize("over,expected", [
    ({"--data-path": "/nonexistent/node"}, "no such directory"),
    ({"--ca": "/nonexistent/ca.crt"}, "no such file"),
    ({"--key": "/nonexistent/node.key"}, "no such file"),
    ({"--catalog": "/nonexistent/catalog"}, "no catalog.json"),
    ({"--state-dir": "/dev/null/state"}, "state-dir /dev/null/state is not writable"),
])  # fmt: skip
def test_missing_inputs(setup, capsys, over: dict, expected: str) -> None:
    source, tmp = setup
    assert main(node(source, tmp, **over)) == 2
    one_line_error(capsys, expected)


def test_malformed_data_path(setup, capsys) -> None:
    source, tmp = setup
    (tmp / "node" / "interactions.csv").write_text("who,what\n1,2\n")
    assert main(node(source, tmp)) == 2
    one_line_error(capsys, "interactions.csv")


def test_an_item_outside_the_catalog_names_the_file_and_line(setup, capsys) -> None:
    source, tmp = setup
    inter = tmp / "node" / "interactions.csv"
    lines = inter.read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",no-such-item," + lines[3].split(",", 2)[2]
    inter.write_text("\n".join(lines) + "\n")
    assert main(node(source, tmp)) == 2
    one_line_error(capsys, "interactions.csv line 4: item_id 'no-such-item' is not in the catalog of 'csv'")


def test_expired_certificate(setup, capsys) -> None:
    source, tmp = setup
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400)
    make_credentials(tmp / "old", 1, ["127.0.0.1"], days=30, not_before=old)
    assert main(node(source, tmp, **{"--ca": str(tmp / "old" / "ca.crt")})) == 2
    one_line_error(capsys, "expired")
    assert main(["deploy", "superlink", "--credentials", str(tmp / "old"), "--state-dir", str(tmp / "l")]) == 2
    one_line_error(capsys, "expired")


def test_unreachable_superlink_is_retried_then_reported(setup, capsys) -> None:
    source, tmp = setup
    assert main(node(source, tmp)) == 2
    err = capsys.readouterr().err
    assert "retrying in" in err and "unreachable after 2 attempts" in err.strip().splitlines()[-1]


def test_the_superlink_interface_is_never_implied(setup, capsys) -> None:
    _, tmp = setup
    assert main(["deploy", "superlink", "--credentials", str(tmp / "creds"), "--state-dir", str(tmp / "l")]) == 2
    one_line_error(capsys, "--host is required")


def test_no_credentials_needs_an_explicit_insecure_flag(setup, capsys) -> None:
    source, tmp = setup
    assert main(["deploy", "superlink", "--state-dir", str(tmp / "l")]) == 2
    one_line_error(capsys, "--insecure")


def test_credentials_are_never_overwritten(setup, capsys) -> None:
    _, tmp = setup
    assert main(["deploy", "credentials", "--out", str(tmp / "creds"), "--nodes", "1"]) == 2
    one_line_error(capsys, "already exists")


def test_one_more_node_key_is_issued_from_the_same_ca_without_touching_the_others(setup, capsys) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    _, tmp = setup
    creds = tmp / "creds"
    before = {p.name: p.read_bytes() for p in creds.iterdir()}
    assert main(["deploy", "credentials", "--out", str(creds), "--add-nodes", "2"]) == 0
    assert "added node-1, node-2 to" in capsys.readouterr().out
    after = {p.name: p.read_bytes() for p in creds.iterdir()}
    assert {n: after[n] for n in before} == before  # nothing overwritten
    assert sorted(set(after) - set(before)) == sorted(f"node-{k}{s}" for k in (1, 2)
                                                      for s in (".key", ".pub", "-tls.crt", "-tls.key"))  # fmt: skip
    ca = x509.load_pem_x509_certificate(after["ca.crt"])
    runtime = x509.load_pem_x509_certificate(after["node-2-tls.crt"])
    ca.public_key().verify(runtime.signature, runtime.tbs_certificate_bytes, ec.ECDSA(runtime.signature_hash_algorithm))
    assert (creds / "node-2.key").stat().st_mode & 0o077 == 0  # private keys are the owner's only


@pytest.mark.parametrize("args,expected", [
    (["--add-nodes", "1", "--out", "/nonexistent/creds"], "no such file"),
    (["--nodes", "1", "--add-nodes", "1"], "--nodes N (a new directory) or --add-nodes N"),
    (["--add-nodes", "1", "--host", "example.org"], "node keys only"),
])  # fmt: skip
def test_adding_node_keys_refuses_what_it_cannot_do(setup, capsys, args: list, expected: str) -> None:
    _, tmp = setup
    out = [] if "--out" in args else ["--out", str(tmp / "creds")]
    assert main(["deploy", "credentials", *out, *args]) == 2
    one_line_error(capsys, expected)
