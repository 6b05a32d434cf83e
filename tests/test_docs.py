"""The documentation cannot drift from the code: the configuration page is generated, and what
a reader follows from the README leads somewhere."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from shared import config_docs
from shared.config import knob
from shared.errors import FedrecError

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_configuration_page_is_the_generated_one() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == config_docs.render(), "docs/configuration.md is stale: run `make docs` and commit it"


def test_a_default_is_written_as_the_manifest_writes_it() -> None:
    assert [config_docs.default_text(v) for v in (True, "", "fedavg", 1e-6, 3600.0, 3)] == \
        ["true", '""', "fedavg", "1e-6", "3600.0", "3"]  # fmt: skip


def test_the_generator_writes_the_page_and_refuses_an_unwritable_path(tmp_path, capsys) -> None:
    out = tmp_path / "configuration.md"
    assert config_docs.main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == config_docs.render()
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert config_docs.main(["--out", str(blocked / "configuration.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("config_docs: error: cannot write")


def test_a_key_documented_by_two_dataclasses_is_refused(monkeypatch) -> None:
    @dataclass(frozen=True)
    class A:
        seed: int = knob(1, "one meaning")

    @dataclass(frozen=True)
    class B:
        seed: int = knob(1, "another")

    monkeypatch.setattr(config_docs, "RUN_CONFIGS", (A, B))
    with pytest.raises(FedrecError, match="'seed' is documented in both A and B"):
        config_docs.documented_keys()
