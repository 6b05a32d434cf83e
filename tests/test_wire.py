"""The weights on the wire: one flat vector, exactly the trainable parameters, refused if altered."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from shared.errors import FedrecError
from shared.models.params import flat_trainable, flatten, load_flat, num_trainable, trainable_state
from shared.wire import WEIGHTS, to_record, weights_vector


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(3, 2)
        self.frozen = torch.nn.Embedding(5, 4).requires_grad_(False)
        self.b = torch.nn.LayerNorm(2)


def test_round_trip_is_exact_and_carries_only_trainable_parameters() -> None:
    model = Tiny()
    state = trainable_state(model)
    record = to_record(state)
    assert list(record.keys()) == [WEIGHTS]
    assert record[WEIGHTS].numpy().size == sum(p.numel() for p in model.parameters() if p.requires_grad)
    back = weights_vector(record, num_trainable(model))
    assert torch.equal(back, flatten(state))


@pytest.mark.parametrize("record", [
    ArrayRecord({"w": Array(np.zeros(12, dtype=np.float32))}),
    ArrayRecord({WEIGHTS: Array(np.zeros(13, dtype=np.float32))}),
    ArrayRecord({WEIGHTS: Array(np.zeros(12, dtype=np.float64))}),
    ArrayRecord({WEIGHTS: Array(np.zeros(12, dtype=np.float32)), "x": Array(np.zeros(1, dtype=np.float32))}),
])  # fmt: skip
def test_a_record_of_another_shape_is_refused(record: ArrayRecord) -> None:
    with pytest.raises(FedrecError):
        weights_vector(record, num_trainable(Tiny()))


def test_the_flat_helpers_agree_with_the_named_tensors() -> None:
    model, other = Tiny(), Tiny()
    flat = flat_trainable(model)
    assert torch.equal(flat, flatten(trainable_state(model)))
    assert torch.equal(weights_vector(to_record(trainable_state(model)), flat.numel()), flat)
    load_flat(other, flat)
    assert all(torch.equal(a, b) for a, b in zip(trainable_state(other).values(), trainable_state(model).values()))
    with pytest.raises(FedrecError, match="expected"):
        load_flat(other, flat[:-1])
