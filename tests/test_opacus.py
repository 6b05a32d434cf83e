"""The model trains under Opacus DP-SGD: per-sample gradients for every trainable layer type, and
ghost clipping (client/ghost.py) that clips exactly as they do."""


from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_tiny, write_csv
from opacus import PrivacyEngine

import client.training
from client.data import LocalData
from client.privacy import RoundPlan
from client.training import local_fit
from shared.config import DataConfig, ModelConfig, TrainConfig
from shared.data.dataset import build_dataset
from shared.data.readers import read_directory
from shared.errors import FedrecError
from shared.models.batches import base_batch, training_sequences
from shared.models.params import flat_trainable, load_flat
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


@pytest.fixture(scope="module")
def tied(setup, tmp_path_factory):
    """A model with every case ghost clipping meets: layers called several times a forward (the
    item tower's projection, LayerNorm and bias embedding: histories, targets, negatives,
    candidates; the user-feature embeddings), 4-d inputs (the ranker's (B, R, C, d)), Linears
    whose norm takes the Gram form (the encoder's, T = 9) and ones whose norm takes the
    per-example gradient (the item projection and the ranker's, T in the 50s). No ID embedding:
    hooks mode (Opacus's embedding grad sampler) gives its padding row a gradient that autograd,
    and so ghost clipping's second pass, does not; on this tiny catalog item 0 is among the
    ranker's hard negatives."""
    dataset, _ = setup
    config = ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=10, use_item_bias=True)
    return dataset, build_model(dataset, config, tmp_path_factory.mktemp("tied"))


@pytest.fixture(scope="module")
def head(setup, tmp_path_factory):
    """`tied` with finetune="head": Linears whose weight is frozen and whose bias trains."""
    dataset, _ = setup
    config = ModelConfig(dim=16, num_layers=1, num_heads=2, max_len=10, use_item_bias=True, finetune="head")
    return dataset, build_model(dataset, config, tmp_path_factory.mktemp("head"))


def dp_update(dataset, model, plan: RoundPlan, proximal_mu: float = 0.0) -> torch.Tensor:
    """The shipped DP-SGD (local_fit) on every user under `plan`, with plain SGD at lr 1 and no
    weight decay: the update is minus the privatised gradient. The model gets its weights back."""
    local = LocalData(dataset, np.arange(dataset.num_users), 0, "region")
    cfg = TrainConfig(epochs=1, batch_size=8, num_negatives=6, optimizer="sgd", lr=1.0, weight_decay=0.0, device="cpu")
    start = flat_trainable(model).clone()
    local_fit(model, local, training_sequences(dataset, local.users, 10), cfg, 1, proximal_mu, dp=plan)
    update = flat_trainable(model) - start
    load_flat(model, start)
    return update


@pytest.mark.parametrize("models", ["tied", "head"])
def test_ghost_clipping_updates_exactly_as_per_example_gradients_do(models, request, monkeypatch) -> None:
    """No noise, every user in the one batch (q = 1), C small enough that every example is
    clipped: ghost clipping's two passes and Opacus's per-example gradients give one update.
    The OS seed is pinned for the test, so both draw the same negatives and dropout masks."""
    dataset, model = request.getfixturevalue(models)
    monkeypatch.setattr(client.training, "secrets", SimpleNamespace(randbits=lambda bits: 1234))
    norm = 1e-3
    unclipped = dp_update(dataset, model, RoundPlan(0.0, 1.0, 1, 1e6, "hooks"))
    hooks = dp_update(dataset, model, RoundPlan(0.0, 1.0, 1, norm, "hooks"))
    ghost = dp_update(dataset, model, RoundPlan(0.0, 1.0, 1, norm, "ghost"))
    assert float(unclipped.norm()) > 100 * norm  # so the clipping binds, for every example
    assert 0 < float(hooks.norm()) <= norm * (1 + 1e-4)
    torch.testing.assert_close(ghost, hooks, rtol=1e-4, atol=1e-4 * float(hooks.abs().max()))


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_fedprox_steps_back_after_every_dp_step_in_both_modes(tied, mode: str) -> None:
    """FedProx's proximal step runs after each noisy step: at lr * mu = 1 it returns every weight
    to the global one, so three noisy steps leave no update."""
    dataset, model = tied
    noisy = dp_update(dataset, model, RoundPlan(1.0, 0.5, 3, 1.0, mode))
    pulled_back = dp_update(dataset, model, RoundPlan(1.0, 0.5, 3, 1.0, mode), proximal_mu=1.0)
    assert float(pulled_back.norm()) < 1e-5 * float(noisy.norm())


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # x is no leaf that needs a gradient
def test_ghost_clipping_refuses_a_parameter_without_a_norm_by_name() -> None:
    """A trainable layer called outside the loss has no per-example gradient norm: the step is
    refused, naming it, rather than letting a norm be missing from the clipping; closing the
    wrapper then leaves nothing of the step behind."""
    from opacus.optimizers import DPOptimizerFastGradientClipping

    from client.ghost import GhostClipping

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.unused(x)  # its output never reaches the loss
            return self.used(x).squeeze(-1)

    model = Model()
    private = GhostClipping(model, 1.0)
    optimizer = DPOptimizerFastGradientClipping(torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
                                                max_grad_norm=1.0, expected_batch_size=4)  # fmt: skip
    with pytest.raises(FedrecError, match="no per-example gradient norm for 'unused.weight'"):
        private.backward(private(torch.randn(4, 3)) ** 2, optimizer)
    private._close()
    # Nothing of the failed step stays on the model, which serves the process's next client.
    assert not any(hasattr(m, "activations") or hasattr(p, "_norm_sample") for m in model.modules() for p in m.parameters())


def test_an_example_whose_gradient_is_not_finite_contributes_nothing_to_the_dp_step() -> None:
    """Weights a server crafted to overflow on one user's data make that example's gradient
    non-finite. Opacus's DPOptimizer then returns NaN for the whole update, a bit about that
    user; ours gives the example a zero gradient, within the sensitivity the accountant assumes."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    from client.training import FiniteDPOptimizer

    def update(optimizer_cls: type, rows: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(0)
        layer = torch.nn.Linear(3, 1)
        start = torch.cat([p.detach().flatten().clone() for p in layer.parameters()])
        # Summed losses: each example's gradient is its own, whatever the batch holds.
        model = GradSampleModule(layer, loss_reduction="sum")
        optimizer = optimizer_cls(torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=0.0,
                                  max_grad_norm=0.5, expected_batch_size=3, loss_reduction="sum")  # fmt: skip
        model(rows).pow(2).sum().backward()
        optimizer.step()
        model._close()
        return torch.cat([p.detach().flatten() for p in layer.parameters()]) - start

    x = torch.tensor([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [2.0, 0.0, 1.0]])
    poisoned = x.clone()
    poisoned[1, 0] = float("inf")  # example 1 meets the crafted overflow
    assert not torch.isfinite(update(DPOptimizer, poisoned)).all()  # Opacus alone: NaN for everyone
    got = update(FiniteDPOptimizer, poisoned)
    assert torch.isfinite(got).all()
    # Example 1's bias gradient is NaN too (its output is inf): it is left out whole, so the update
    # is the other two examples' clipped gradients, as if example 1 had not been sampled.
    only_two = update(FiniteDPOptimizer, x[[0, 2]])
    assert torch.allclose(got, only_two, atol=1e-6)
