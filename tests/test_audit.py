"""The membership-inference audit tells a memorising model from an untrained one."""

from pathlib import Path

import pytest
import torch
from conftest import make_tiny, write_csv

from shared.cli import main
from shared.config import DataConfig, ModelConfig, TrainConfig
from shared.data.dataset import build_dataset
from shared.data.readers import read_directory
from shared.models.checkpoint import save_checkpoint
from shared.models.training import build_model, fit
from shared.privacy.audit import membership_audit

SMALL = ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=12, retrieve_top_n=10, dropout=0.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = write_csv(make_tiny(num_users=60, num_items=40, seed=5), tmp_path_factory.mktemp("a") / "d")
    return d, build_dataset(read_directory(d), DataConfig(dataset="csv", data_path=str(d)))


def test_an_untrained_model_leaks_nothing_and_a_memorising_one_does(data, tmp_path: Path) -> None:
    _, dataset = data
    torch.manual_seed(0)
    fresh = membership_audit(build_model(dataset, SMALL, tmp_path), dataset, bootstraps=100)
    assert fresh["ci_low"] <= 0.5 <= fresh["ci_high"] and fresh["users"] == dataset.num_users
    torch.manual_seed(0)
    model = build_model(dataset, SMALL, tmp_path)
    fit(model, dataset, TrainConfig(epochs=30, batch_size=8, lr=1e-2, patience=100, num_negatives=8))
    overfit = membership_audit(model, dataset, bootstraps=100)
    assert overfit["ci_low"] > 0.7 and overfit["ci_low"] <= overfit["auc"] <= overfit["ci_high"]


def test_the_cli_refuses_another_catalog(data, tmp_path: Path, capsys) -> None:
    d, dataset = data
    save_checkpoint(build_model(dataset, SMALL, tmp_path), tmp_path / "ckpt", {})
    other = write_csv(make_tiny(num_users=20, num_items=25, seed=1), tmp_path / "other")
    assert main(["audit", "--checkpoint", str(tmp_path / "ckpt"), "--dataset", "csv", "--path", str(other)]) == 2
    assert "does not match the checkpoint" in capsys.readouterr().err
    assert main(["audit", "--checkpoint", str(tmp_path / "ckpt"), "--dataset", "csv", "--path", str(d),
                 "--bootstraps", "20", "--json", str(tmp_path / "a.json")]) == 0  # fmt: skip
    assert (tmp_path / "a.json").exists()
