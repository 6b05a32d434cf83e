"""The Flower run config, the dataclasses that mirror it, and the page that documents it agree."""

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from shared.config import (
    AuditConfig,
    FaultConfig,
    SecureAggregationConfig,
    PrivacyConfig,
    DataConfig,
    FederationConfig,
    ModelConfig,
    PartitionConfig,
    RunConfig,
    TrainConfig,
    from_run_config,
)
from shared.config_docs import documented_keys
from shared.errors import FedrecError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = (DataConfig, PartitionConfig, FederationConfig, TrainConfig, ModelConfig, PrivacyConfig, FaultConfig,
           SecureAggregationConfig, AuditConfig)


def run_config() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["flwr"]["app"]["config"]


def test_every_run_config_key_is_documented_in_the_configuration_page() -> None:
    """docs/configuration.md has a row for every manifest key, and the dataclasses document
    exactly the manifest's keys: none missing, none left over from a removed key."""
    documented = {key for key, *_ in documented_keys()}
    assert sorted(set(run_config()) - documented) == [], "give each a knob(default, doc) in shared/config.py"
    assert sorted(documented - set(run_config())) == [], "documented, but not in [tool.flwr.app.config]"
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert [k for k in run_config() if f"| `{k}` |" not in page] == [], "regenerate the page: make docs"


def test_every_run_config_key_is_read_by_a_config_dataclass() -> None:
    known = {f.name.replace("_", "-") for cls in CONFIGS for f in fields(cls)} | {"local-epochs"}
    assert sorted(set(run_config()) - known) == []


def test_the_shipped_defaults_validate() -> None:
    for cls in CONFIGS:
        from_run_config(cls, run_config())


@pytest.mark.parametrize("cls,key,value,match", [
    (FederationConfig, "strategy", "fedsgd", "unknown strategy 'fedsgd'"),
    (FederationConfig, "fraction-train", 0.0, "fraction-train must be in"),
    (FederationConfig, "num-server-rounds", 0, "num-server-rounds must be >= 1"),
    (TrainConfig, "lr", -1.0, "lr must be > 0"),
    (TrainConfig, "device", "tpu", "device must be auto, cpu or cuda"),
    (TrainConfig, "optimizer", "adam", "optimizer must be one of adamw, sgd, got 'adam'"),
    (FederationConfig, "server-tau", 0.0, "server-lr and server-tau must be > 0"),
    (ModelConfig, "text-finetune-layers", 9, "text-finetune-layers must be 0..6"),
    (PrivacyConfig, "dp-grad-sample-mode", "functorch", "dp-grad-sample-mode must be one of hooks, ghost"),
])  # fmt: skip
def test_bad_values_are_refused_with_the_key_name(cls, key, value, match) -> None:
    with pytest.raises(FedrecError, match=match):
        from_run_config(cls, {**run_config(), key: value})


def test_the_dataclass_defaults_are_the_app_manifests() -> None:
    """One source of defaults: every [tool.flwr.app.config] value equals its dataclass field's
    default, so a run config, a CLI command and a test that builds a config agree."""
    import dataclasses
    import tomllib

    from shared import config as c

    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
        manifest = tomllib.load(f)["tool"]["flwr"]["app"]["config"]
    differ = []
    for cls in (c.DataConfig, c.PartitionConfig, c.ModelConfig, c.TrainConfig, c.PrivacyConfig,
                c.FederationConfig, c.FaultConfig, c.SecureAggregationConfig, c.AuditConfig):  # fmt: skip
        for field in dataclasses.fields(cls):
            key = field.name.replace("_", "-")
            if key in manifest and manifest[key] != field.default:
                differ.append(f"{key}: {cls.__name__} {field.default!r}, pyproject {manifest[key]!r}")
    assert differ == []


def test_a_client_trains_the_federations_local_epochs_per_round() -> None:
    run = RunConfig.parse({**run_config(), "local-epochs": 3, "lr": 0.05})
    assert (run.local_train.epochs, run.local_train.lr, run.train.epochs) == (3, 0.05, TrainConfig().epochs)


def test_the_apps_read_the_run_config_only_through_the_dataclasses() -> None:
    """A `run_config.get(key, default)` in an app is a second default, free to drift from the
    dataclass's: the apps parse the run config (RunConfig, from_run_config) and read fields."""
    raw = re.compile(r"run_config(\.get\(|\[)")
    found = [f"{path.relative_to(ROOT)}:{n}" for folder in ("client", "server")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if raw.search(line)]  # fmt: skip
    assert found == []
