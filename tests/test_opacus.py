"""The model trains under Opacus DP-SGD: per-sample gradients for every trainable layer type."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny, write_csv
from opacus import PrivacyEngine

from shared.config import DataConfig, ModelConfig, TrainConfig
from shared.data.dataset import build_dataset
from shared.data.readers import read_directory
from shared.models.batches import base_batch, training_sequences
from shared.models.text_encoder import load_text_model
from shared.models.training import build_model, ranking_candidates


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = write_csv(make_tiny(num_users=20, num_items=30, seed=2), tmp_path_factory.mktemp("o") / "d")
    dataset = build_dataset(read_directory(d), DataConfig(dataset="csv", data_path=str(d)))
    model = build_model(dataset, ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=10),
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
    rng = np.random.default_rng(0)
    private.train()
    for (rows,) in loader:
        if len(rows) == 0:
            continue
        batch = base_batch(data, rows.numpy(), dataset.num_items, cfg, rng)
        batch["rank_items"] = ranking_candidates(model, batch, cfg, rng)
        optimizer.zero_grad()
        private(batch)["loss"].mean().backward()
        trainable = [(n, p) for n, p in private.named_parameters() if p.requires_grad]
        missing = [n for n, p in trainable if getattr(p, "grad_sample", None) is None]
        # Parameters unused by a batch (e.g. an ID-embedding row) still get zero per-sample grads.
        assert not missing, missing
        optimizer.step()
        break
    kinds = {type(m).__name__ for m in model.modules()
             if any(p.requires_grad for p in m.parameters(recurse=False))}  # fmt: skip
    assert {"Linear", "Embedding", "LayerNorm"} <= kinds
    changed = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    assert changed == set(before)  # noise reaches every trainable parameter
    assert engine.get_epsilon(delta=1e-5) > 0


def test_text_encoder_top_layer_finetuning_is_opacus_compatible() -> None:
    text_model, tokenizer = load_text_model(trainable_top_layers=1)
    text_model.train()  # Opacus needs train mode
    head = torch.nn.Linear(384, 1)
    module = torch.nn.ModuleDict({"enc": text_model, "head": head})

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = module

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            b, t = ids.shape
            pos = torch.arange(t).expand(b, t)  # [B, L] ids: Opacus issue 841
            h = self.m["enc"](input_ids=ids, attention_mask=mask, position_ids=pos,
                              token_type_ids=torch.zeros_like(ids)).last_hidden_state
            return self.m["head"](h.mean(1)).squeeze(-1)

    wrapper = Wrapper()
    tokens = tokenizer(["Toy Story (1995)", "Heat (1995)", "Alien (1979)", "Up (2009)"],
                       padding=True, return_tensors="pt")  # fmt: skip
    dataset = torch.utils.data.TensorDataset(tokens["input_ids"], tokens["attention_mask"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    opt = torch.optim.SGD([p for p in wrapper.parameters() if p.requires_grad], lr=0.01)
    private, opt, loader = PrivacyEngine().make_private(
        module=wrapper, optimizer=opt, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0)
    for ids, mask in loader:
        if len(ids) == 0:
            continue
        opt.zero_grad()
        private(ids, mask).pow(2).mean().backward()
        opt.step()
        break
    top = text_model.encoder.layer[-1].attention.self.query.weight
    assert top.requires_grad and not text_model.encoder.layer[0].attention.self.query.weight.requires_grad
