"""simulations/step_scale.py: the models between (and beyond) a pretrained start and its fine-tuning."""

from __future__ import annotations

import pytest
import torch

from shared.errors import FedrecError
from simulations.step_scale import main, scaled_state


def test_scale_zero_is_the_start_one_the_fine_tuned_model_and_more_goes_further() -> None:
    start = {"w": torch.tensor([1.0, 2.0]), "count": torch.tensor([3])}
    end = {"w": torch.tensor([2.0, 0.0]), "count": torch.tensor([5])}
    assert torch.equal(scaled_state(start, end, 0.0)["w"], start["w"])
    assert torch.equal(scaled_state(start, end, 1.0)["w"], end["w"])
    assert torch.equal(scaled_state(start, end, 3.0)["w"], torch.tensor([4.0, -4.0]))
    assert torch.equal(scaled_state(start, end, 3.0)["count"], start["count"])  # integer buffers are not scaled


def test_a_model_of_another_shape_is_refused() -> None:
    with pytest.raises(FedrecError, match="name or shape"):
        scaled_state({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, 2.0)
    with pytest.raises(FedrecError, match="name or shape"):
        scaled_state({"w": torch.zeros(2)}, {"v": torch.zeros(2)}, 2.0)


def test_a_missing_checkpoint_is_one_line_exit_2_and_nothing_written(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "model.safetensors").write_bytes(b"")
    argv = ["--checkpoint", str(tmp_path / "nope"), "--finetuned", str(tmp_path / "ft"), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().endswith("no model.safetensors there")
    with pytest.raises(SystemExit) as stop:
        main(["--checkpoint", str(tmp_path), "--finetuned", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert stop.value.code == 2 and "--finetuned" in capsys.readouterr().err
    assert not list(tmp_path.glob("step_scale.*"))
