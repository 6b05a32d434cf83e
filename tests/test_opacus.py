"""The model trains under Opacus DP-SGD: per-sample gradients for every trainable layer type."""


import numpy as np
import pytest
import torch
from conftest import make_tiny, write_csv
from opacus import PrivacyEngine

from shared.config import DataConfig, ModelConfig, TrainConfig
from shared.data.dataset import build_dataset
from shared.data.readers import read_directory
from shared.models.batches import base_batch, training_sequences
from shared.models.text_encoder import bert_layer, load_text_model
from shared.models.training import build_model


def dp_step(model, private, optimizer, loader, data, cfg, check) -> None:
    """One DP-SGD step on the first non-empty Poisson batch; `check` runs before the step."""
    rng = np.random.default_rng(0)
    private.train()
    for (rows,) in loader:
        if len(rows) == 0:
            continue
        batch = base_batch(data, rows.numpy(), model.config["num_items"], cfg, rng)
        optimizer.zero_grad()
        private(batch)["loss"].mean().backward()
        check()
        optimizer.step()
        return
    pytest.fail("Poisson sampling gave only empty batches")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = write_csv(make_tiny(num_users=20, num_items=30, seed=2), tmp_path_factory.mktemp("o") / "d")
    dataset = build_dataset(read_directory(d), DataConfig(dataset="csv", data_path=str(d)))
    model = build_model(dataset, ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=10, use_item_bias=True),
                        tmp_path_factory.mktemp("cache"))  # fmt: skip
    return dataset, model


def test_make_private_and_step_updates_every_layer_type(setup) -> None:
    dataset, model = setup
    cfg = TrainConfig(batch_size=8, num_negatives=6)
    data = training_sequences(dataset, np.arange(dataset.num_users), 10)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(len(data))), batch_size=8)
    engine = PrivacyEngine(accountant="prv")
    private, optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader,
        noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=True,
    )  # fmt: skip
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def every_parameter_has_per_sample_grads() -> None:
        trainable = [(n, p) for n, p in private.named_parameters() if p.requires_grad]
        missing = [n for n, p in trainable if getattr(p, "grad_sample", None) is None]
        # Parameters unused by a batch (e.g. an ID-embedding row) still get zero per-sample grads.
        assert not missing, missing

    dp_step(model, private, optimizer, loader, data, cfg, every_parameter_has_per_sample_grads)
    kinds = {type(m).__name__ for m in model.modules()
             if any(p.requires_grad for p in m.parameters(recurse=False))}  # fmt: skip
    assert {"Linear", "Embedding", "LayerNorm"} <= kinds
    changed = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    assert changed == set(before)  # noise reaches every trainable parameter
    assert engine.get_epsilon(delta=1e-5) > 0


def test_bert_layer_matches_hugging_face_on_a_plain_batch() -> None:
    text_model, tokenizer = load_text_model()
    layer = text_model.encoder.layer[-1].eval()
    tokens = tokenizer(["Toy Story (1995)", "Heat"], padding=True, return_tensors="pt")
    x = torch.randn(2, tokens["input_ids"].shape[1], 384)
    mask = tokens["attention_mask"].bool()
    ours = bert_layer(layer, x, mask)
    extended = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    theirs = layer(x, attention_mask=extended)
    theirs = theirs[0] if isinstance(theirs, tuple) else theirs
    assert torch.allclose(ours[mask], theirs[mask], atol=1e-4)


def test_text_finetuning_option_trains_under_opacus(setup, tmp_path) -> None:
    dataset, _ = setup
    model = build_model(dataset, ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=10,
                                             text_finetune_layers=1), tmp_path)  # fmt: skip
    top = model.text_top[0].attention.self.query.weight
    before = top.detach().clone()
    cfg = TrainConfig(batch_size=4, num_negatives=3, rank_positions=1)
    data = training_sequences(dataset, np.arange(dataset.num_users), 10)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(len(data))), batch_size=4)
    private, optimizer, loader = PrivacyEngine().make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0)
    dp_step(model, private, optimizer, loader, data, cfg, lambda: top.grad_sample is not None or pytest.fail())
    assert not torch.equal(top, before)
