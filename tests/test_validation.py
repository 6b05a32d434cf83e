"""The server refuses bad updates before aggregation, each with a reason."""

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Error, Message, Metadata, RecordDict

from server.validation import validate_updates
from shared.models.params import flatten, trainable_state
from shared.wire import WEIGHTS, to_record


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 3)


def reply(node: int, content: RecordDict | None = None, error: str = "") -> Message:
    meta = Metadata(run_id=1, message_id=f"r{node}", src_node_id=node, dst_node_id=0, reply_to_message_id=f"m{node}",
                    group_id="1", created_at=0.0, ttl=60.0, message_type="train")  # fmt: skip
    if error:
        return Message(Error(code=0, reason=error), metadata=meta)
    return Message(content, metadata=meta)


def update(model: torch.nn.Module, delta: float, node: int, nan: bool = False) -> Message:
    state = {k: v + delta for k, v in trainable_state(model).items()}
    if nan:
        state["a.weight"][0, 0] = float("nan")
    return reply(node, RecordDict({"arrays": to_record(state)}))


def test_each_kind_of_bad_update_is_refused_with_its_reason() -> None:
    model = Tiny()
    global_flat = flatten(trainable_state(model))
    replies = [update(model, 0.01 * (k + 1), k) for k in range(5)]  # five honest updates
    replies += [
        update(model, 0.01, 10, nan=True),
        update(model, 100.0, 11),  # scaled: far beyond the median norm
        reply(12, RecordDict({"arrays": ArrayRecord({WEIGHTS: Array(np.zeros(3, dtype=np.float32))})})),
        reply(13, RecordDict({"arrays": ArrayRecord({"x": Array(np.zeros(15, dtype=np.float32))})})),
        reply(14, error="client crashed"),
        reply(15, RecordDict({})),
    ]
    kept, rejected = validate_updates(replies, global_flat, max_norm_ratio=10.0)
    assert sorted(m.metadata.src_node_id for m in kept) == [0, 1, 2, 3, 4]
    reasons = {r.node_id: r.reason for r in rejected}
    assert "non-finite" in reasons[10] and "median" in reasons[11] and "malformed" in reasons[12]
    assert "malformed" in reasons[13] and "client error" in reasons[14] and "no weights" in reasons[15]


def test_the_norm_check_needs_a_median_and_can_be_off() -> None:
    model = Tiny()
    global_flat = flatten(trainable_state(model))
    two = [update(model, 0.01, 0), update(model, 100.0, 1)]
    assert len(validate_updates(two, global_flat, 10.0)[0]) == 2  # too few for a median
    many = [update(model, 0.01, k) for k in range(4)] + [update(model, 100.0, 9)]
    assert len(validate_updates(many, global_flat, 0.0)[0]) == 5  # off


def test_central_dp_refuses_above_a_fixed_bar_not_a_median() -> None:
    """Under central DP one client's inclusion must not depend on the others' updates: with most
    updates tiny, a clipped-size update (norm 0.15 ~ 15 x the median) is kept, and one above the
    fixed bar is refused whatever the median."""
    model = Tiny()
    global_flat = flatten(trainable_state(model))
    n = global_flat.numel() ** 0.5  # an update of `delta` everywhere has norm delta * n
    replies = [update(model, 0.01 / n, k) for k in range(4)] + [update(model, 0.15 / n, 8), update(model, 0.5 / n, 9)]
    kept, rejected = validate_updates(replies, global_flat, max_norm_ratio=10.0, fixed_bar=0.2)
    assert sorted(m.metadata.src_node_id for m in kept) == [0, 1, 2, 3, 8]
    assert [r.node_id for r in rejected] == [9] and "clipping bar" in rejected[0].reason
    assert 8 not in {m.metadata.src_node_id for m in validate_updates(replies, global_flat, 10.0)[0]}


def test_the_final_test_uses_the_best_validation_rounds_weights(tmp_path) -> None:
    from conftest import make_tiny, write_csv

    from server.checkpoints import ServerState, save_round
    from server.rounds import best_weights
    from shared.config import DataConfig, ModelConfig
    from shared.data.dataset import load_dataset
    from shared.models.params import load_flat
    from shared.models.training import build_model
    from shared.wire import weights_vector

    data = write_csv(make_tiny(), tmp_path / "csv")
    dataset = load_dataset(DataConfig(dataset="csv", data_path=str(data)))
    model = build_model(dataset, ModelConfig(dim=16, num_layers=1, max_len=12, use_id_embedding=False), tmp_path)
    start = flatten(trainable_state(model))
    state = ServerState()
    for r in (1, 2):
        load_flat(model, start + r)
        state.round, state.best_round = r, 1
        save_round(tmp_path / "run", model, state)
    last = to_record(trainable_state(model))
    chosen = best_weights(tmp_path / "run", state, model, last)
    assert torch.equal(weights_vector(chosen, start.numel()), start + 1)
    state.best_round = 2
    assert best_weights(tmp_path / "run", state, model, last) is last
