"""Secure aggregation (SecAgg+) in a federation (in one process, tests/inprocess.py, the nodes'
ClientApp mods included): the global model is plain FedAvg's up to quantization, no update leaves
a node in the clear, dropouts are unmasked, and central DP still applies."""

import json
from pathlib import Path

import pytest
import torch
from conftest import make_tiny, tiny_run_config, write_csv
from inprocess import run_federation
from safetensors.torch import load_file

from client.message_audit import violations
from client.faults import CRASH, fault_for
from server.secure import check_secure_aggregation
from shared.config import FaultConfig, SecureAggregationConfig, from_run_config
from shared.errors import FedrecError

NODES, SEED = 5, 42


def test_settings_that_cannot_work_are_refused() -> None:
    for bad in ({"secagg-num-shares": 2}, {"secagg-num-shares": 3.5}, {"secagg-reconstruction-threshold": 1},
                {"secagg-num-shares": 3, "secagg-reconstruction-threshold": 3}, {"secagg-clipping-range": 0}):  # fmt: skip
        with pytest.raises(FedrecError, match="secagg-"):
            from_run_config(SecureAggregationConfig, bad)
    cfg = from_run_config(SecureAggregationConfig, {"secure-aggregation": True, "secagg-num-shares": 0.6})
    assert cfg.secagg_num_shares == 0.6 and cfg.secagg_reconstruction_threshold == 2
    with pytest.raises(FedrecError, match="krum"):
        check_secure_aggregation("krum", cfg)
    check_secure_aggregation("fedadam", cfg)


def _run_config(data: Path, cache: Path, out: Path, **extra: object) -> dict[str, object]:
    return tiny_run_config(data, cache, out, nodes=NODES, min_train_nodes=2, dp=False, seed=SEED,
                           fraction_evaluate=0.4, **extra)  # fmt: skip


def _simulate(tmp_path_factory, data, cache, name: str, **extra: object) -> tuple[int, Path | None]:
    run = run_federation(_run_config(data, cache, tmp_path_factory.mktemp(name), **extra), NODES)
    return run.code, run.run_dir


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_csv(make_tiny(num_users=30, num_items=40, seed=5), tmp_path_factory.mktemp("d") / "csv")


def test_the_secure_sum_is_fedavg_up_to_quantization_and_no_update_leaves_in_the_clear(tmp_path_factory, data,
                                                                                          text_cache) -> None:  # fmt: skip
    rc_plain, plain = _simulate(tmp_path_factory, data, text_cache, "plain", num_server_rounds=1)
    rc_secure, secure = _simulate(tmp_path_factory, data, text_cache, "secure", num_server_rounds=1,
                                  secure_aggregation=True, secagg_num_shares=3, secagg_max_weight=10,
                                  audit_messages=True)  # fmt: skip
    assert rc_plain == rc_secure == 0
    a, b = load_file(plain / "round-001" / "model.safetensors"), load_file(secure / "round-001" / "model.safetensors")
    init = _initial_weights(data, text_cache)
    moved = torch.sqrt(sum(((a[k] - init[k]) ** 2).sum() for k in init))
    differs = torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in init))
    # Only quantization separates them: 2 * clipping range / 2**22 * max-weight / weight per value
    # (measured 1e-4 of the round's step with max-weight 10; 1e-2 with the default 1000).
    assert moved > 0 and differs < 1e-3 * moved, (float(moved), float(differs))
    history = json.loads((secure / "metrics.json").read_text())["history"]
    assert history[0]["clients_trained"] == NODES and history[0]["rejected"] == []
    assert history[0]["bytes_per_client_up_masked"] > history[0]["bytes_per_client_each_way"]  # integers, masked

    lines = [json.loads(x) for f in (secure / "node-state").glob("messages-*.jsonl") for x in f.read_text().splitlines()]
    train = [x for x in lines if x["message_type"] == "train"]
    assert len(train) == 4 * NODES  # setup, share keys, masked update, unmask
    assert all(not rec.get("arrays") for x in train for rec in x["records"].values())  # nothing in the clear
    assert sum("masked_params" in x["records"].get("secaggplus_configs", {}).get("keys", {}) for x in train) == NODES
    assert [v for x in lines for v in violations(x, 0)] == []


def _initial_weights(data: Path, cache: Path) -> dict[str, torch.Tensor]:
    """The global model before round 1, rebuilt as the ServerApp builds it: from the seed."""
    from inprocess import run_config

    from shared.config import DataConfig, ModelConfig
    from shared.data.dataset import load_dataset
    from shared.models.params import trainable_state
    from shared.models.training import build_model, seed_everything

    config = run_config(_run_config(data, cache, Path("unused")), NODES)
    seed_everything(SEED)
    data_cfg = from_run_config(DataConfig, config)
    model = build_model(load_dataset(data_cfg), from_run_config(ModelConfig, config), data_cfg.cache_path)
    return {k: v.clone() for k, v in trainable_state(model).items()}


def test_dropouts_are_unmasked_and_central_dp_noises_the_secure_mean(tmp_path_factory, data, text_cache) -> None:
    faults = {"fault-crash-fraction": 0.2}
    rc, run_dir = _simulate(tmp_path_factory, data, text_cache, "dropouts", num_server_rounds=2,
                            secure_aggregation=True, secagg_num_shares=5, secagg_reconstruction_threshold=3,
                            central_dp=True, central_noise_multiplier=0.5, central_clipping_norm=0.5,
                            fault_crash_fraction=0.2)  # fmt: skip
    assert rc == 0
    cfg = from_run_config(FaultConfig, faults)
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert len(history) == 2
    for r in history:
        crashed = [p for p in range(NODES) if fault_for(cfg, SEED, r["round"], p) == CRASH]
        assert r["clients_trained"] == NODES - len(crashed)
        assert sum("client error" in x["reason"] for x in r["rejected"]) == len(crashed)
        assert r["central_dp"]["releases"] == r["round"] and r["central_dp"]["epsilon"] > 0
    assert any(fault_for(cfg, SEED, r, p) == CRASH for r in (1, 2) for p in range(NODES))  # a dropout did happen
    weights = load_file(run_dir / "round-002" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_too_many_dropouts_stop_the_run_with_the_reason(tmp_path_factory, data, text_cache) -> None:
    rc, run_dir = _simulate(tmp_path_factory, data, text_cache, "halted", num_server_rounds=1,
                            secure_aggregation=True, secagg_num_shares=5, secagg_reconstruction_threshold=4,
                            fault_crash_fraction=0.6, round_retries=0)  # fmt: skip
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert rc == 2 and "fewer than min-train-nodes" in summary.get("stopped", ""), summary.get("stopped")
    assert not (run_dir / "round-001").exists()


def _fit_message(weights):  # a Message as the SecAgg+ workflow sends its training stage
    import time

    from flwr.app import Message, Metadata
    from flwr.common import FitIns, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    content = compat.fitins_to_recorddict(FitIns(ndarrays_to_parameters([weights]), {"server-round": 1}), True)
    meta = Metadata(run_id=7, message_id="m", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="1",
                    created_at=time.time(), ttl=3600.0, message_type="train")  # fmt: skip
    return Message(content, metadata=meta)


def test_the_node_masks_its_update_declines_with_weight_zero_and_never_masks_nan() -> None:
    import numpy as np
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.common import parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    from client.secure import _train_as_fitres

    start = np.arange(4, dtype=np.float32)
    context = Context(run_id=7, node_id=1, node_config={}, state=RecordDict(), run_config={})

    def answer(content: RecordDict):  # a train handler that replies with `content`
        def handler(msg: Message, ctx: Context) -> Message:
            assert set(msg.content.keys()) == {"arrays", "config"}  # it got fedrec's records
            return Message(content, reply_to=msg)
        return handler

    privacy = ConfigRecord({"status": "active"})
    trained = RecordDict({"arrays": ArrayRecord({"weights": Array(start + 0.5)}),
                          "metrics": MetricRecord({"num-examples": 7, "client-weight": 1}), "privacy": privacy})  # fmt: skip
    out = _train_as_fitres(_fit_message(start), context, answer(trained)).content
    fitres = compat.recorddict_to_fitres(out, keep_input=True)
    assert np.allclose(parameters_to_ndarrays(fitres.parameters)[0], 0.5)  # the update, not the weights
    assert fitres.num_examples == 7 and "privacy" in out and "metrics" in out

    declined = RecordDict({"privacy": ConfigRecord({"status": "budget-exhausted"})})
    fitres = compat.recorddict_to_fitres(_train_as_fitres(_fit_message(start), context, answer(declined)).content, True)
    assert fitres.num_examples == 0 and not parameters_to_ndarrays(fitres.parameters)[0].any()

    broken = RecordDict({"arrays": ArrayRecord({"weights": Array(np.full(4, np.nan, dtype=np.float32))}),
                         "metrics": MetricRecord({"num-examples": 7})})  # fmt: skip
    with pytest.raises(FedrecError, match="not finite"):
        _train_as_fitres(_fit_message(start), context, answer(broken))
