"""The federated loop: train -> aggregate -> evaluate -> checkpoint, round after round.

This is Flower's `Strategy.start` loop written out, because fedrec needs what it has no hooks for:
a checkpoint and a metrics file after every round, early stopping on validation NDCG@10, resuming
at the right round, and a final test evaluation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from server import ledger
from server.checkpoints import ServerState, load_round, round_dir, save_round
from server.messaging import send_and_receive
from server.outcomes import reasons_line
from server.privacy import (ActiveGrid, PrivacyTracker, central_spent, declined, discard_unreleased, fixed_denominator,
                            is_central_dp, is_refusal)
from server.secure import secure_updates
from server.strategy import optimizer_state
from server.validation import Rejection, RoundUpdates, validate_updates
from shared.atomic import write_json
from shared.config import FederationConfig, SecureAggregationConfig
from shared.data.consent import NON_CONSENTED
from shared.data.dataset import CATALOG_KEY
from shared.models.params import load_flat, num_trainable, trainable_state
from shared.models.recommender import Recommender
from shared.wire import to_record, weights_vector

log = logging.getLogger("flwr.fedrec")
SELECT = "ranking-full-ndcg@10"  # the two-stage model's validation NDCG@10
ServerEval = Callable[[Recommender, str], dict[str, float]]


def _metrics(record: MetricRecord | None) -> dict[str, float]:
    return {k: float(v) for k, v in (record or {}).items()}  # type: ignore[arg-type]


def _evaluate(
    grid: Grid, strategy: Strategy, server_round: int, arrays: ArrayRecord, sent: dict[str, str], stage: str,
    timeout: float, users: str = "all",
) -> dict[str, float]:  # fmt: skip
    """Federated evaluation: each sampled node scores the model on its own `stage` items, of all
    its users or of those who did not consent to central use (`users`)."""
    config = ConfigRecord({**sent, "stage": stage, "users": users})
    messages = strategy.configure_evaluate(server_round, arrays, config, grid)
    replies = send_and_receive(grid, messages, timeout)
    # A node with too few users to hide one of them sends no metrics (num-examples 0).
    answered = [m for m in replies if m.has_error() or float(m.content["metrics"]["num-examples"]) > 0]
    metrics = _metrics(strategy.aggregate_evaluate(server_round, answered)) if answered else {}
    withheld = len(replies) - len(answered)
    return {**metrics, "nodes-withheld": withheld} if withheld else metrics


def _collect(
    grid: Grid, strategy: Strategy, model: Recommender, arrays: ArrayRecord, cfg: FederationConfig,
    privacy: PrivacyTracker, server_round: int, sent: dict[str, str], secagg: SecureAggregationConfig,
) -> RoundUpdates:  # fmt: skip
    """One attempt at a round's training, every reply ledgered."""
    active = ActiveGrid(grid, privacy.exhausted)
    if secagg.secure_aggregation:
        return secure_updates(active, strategy, model, arrays, ConfigRecord(sent), server_round, secagg,
                              cfg.round_timeout, privacy)  # fmt: skip
    sampled = list(strategy.configure_train(server_round, arrays, ConfigRecord(sent), active))
    replies = send_and_receive(grid, sampled, cfg.round_timeout)
    candidates = [m for m in replies if not declined(m) and not is_refusal(m)]
    # Central DP: a fixed bar just above the clipping norm (float32 rounding of a clipped update).
    bar = 1.001 * float(strategy.clipping_norm) if is_central_dp(strategy) else 0.0  # type: ignore[attr-defined]
    kept, rejections = validate_updates(candidates, weights_vector(arrays, num_trainable(model)),
                                        cfg.max_update_norm_ratio, bar)  # fmt: skip
    privacy.record(server_round, replies, {r.node_id: r.reason for r in rejections})
    return RoundUpdates(replies, kept, rejections, sampled)


def _train_round(
    grid: Grid, strategy: Strategy, model: Recommender, arrays: ArrayRecord, cfg: FederationConfig,
    privacy: PrivacyTracker, server_round: int, sent: dict[str, str], secagg: SecureAggregationConfig,
) -> tuple[RoundUpdates | None, list[Rejection], int, str]:  # fmt: skip
    """One round's training: the attempt whose updates are aggregated, every refused update, the
    number of clients that declined, and why the run must stop ('' to go on). A round whose valid
    updates fall short of min-train-nodes (crashed, hung, refused clients) is re-sampled up to
    round-retries times."""
    refused: list[Rejection] = []
    for attempt in range(cfg.round_retries + 1):
        if attempt:
            discard_unreleased(strategy, server_round)
        updates = _collect(grid, strategy, model, arrays, cfg, privacy, server_round, sent, secagg)
        for r in updates.rejections:
            log.warning("round %d: update of node %d refused: %s", server_round, r.node_id, r.reason)
        refused += updates.rejections
        declines = sum(declined(m) for m in updates.replies)
        if updates.replies and declines == len(updates.replies):
            return None, refused, declines, f"every client sampled for round {server_round} declined: its privacy budget is spent"
        if len(updates.kept) >= cfg.min_train_nodes:
            return updates, refused, declines, ""
        log.warning("round %d: %d valid updates (min-train-nodes %d)%s", server_round, len(updates.kept),
                    cfg.min_train_nodes, "; sampling again" if attempt < cfg.round_retries else "")  # fmt: skip
    # The nodes' own reasons (their errors, refusals, refused updates) from the last attempt.
    said = reasons_line(updates.replies, [(r.node_id, r.reason) for r in updates.rejections])
    silent = len(updates.sampled) - len(updates.replies)
    said += ("; " if said and silent > 0 else "") + (f"{silent} sampled node(s) did not reply within round-timeout" if silent > 0 else "")
    return None, refused, 0, (f"round {server_round}: fewer than min-train-nodes ({cfg.min_train_nodes}) valid updates "
                              f"in {cfg.round_retries + 1} attempts" + (f" ({said})" if said else ""))  # fmt: skip


def untrained_note(start: int, last_round: int, pretrained: bool) -> str:
    """What the final test evaluated when no round from `start` on completed ('' when one did): the
    model this run started from, which no node of this run trained."""
    if last_round >= start:
        return ""
    if start > 1:
        weights = f"round {last_round}'s weights from the checkpoint this run resumed"
    else:
        weights = "the pretrained starting weights" if pretrained else "the untrained initial weights"
    return f"{weights}: no node trained in this run"


def best_weights(run_dir: Path, state: ServerState, model: Recommender, last: ArrayRecord) -> ArrayRecord:
    """The best validation round's global weights (its checkpoint), or `last` when that is the
    last round or no round was validated. `model` ends holding the weights returned."""
    if not state.best_round or state.best_round == state.round:
        return last
    load_round(round_dir(run_dir, state.best_round), model)
    return to_record(trainable_state(model))


def run_rounds(
    grid: Grid,
    strategy: Strategy,
    model: Recommender,
    cfg: FederationConfig,
    run_dir: Path,
    state: ServerState,
    server_eval: ServerEval | None = None,
    catalog: str = "",
    secagg: SecureAggregationConfig | None = None,
    consent: bool = False,
) -> dict[str, Any]:
    """Run rounds state.round+1 .. num-server-rounds; returns the summary written to metrics.json.
    `catalog` (the item catalog's fingerprint) goes out with every message, so a node whose
    catalog differs refuses to train instead of updating the wrong items' weights. With `secagg`
    on, training rounds run SecAgg+ (server/secure.py). With `consent` (some users consented to
    central use) the final test is also reported for the users who did not."""
    secagg = secagg or SecureAggregationConfig()
    sent = {CATALOG_KEY: catalog} if catalog else {}
    arrays = to_record(trainable_state(model))
    if state.round > 0:  # a resumed run: whatever was ledgered after the checkpoint is redone
        ledger.mark_resume(run_dir, state.round)
    privacy = PrivacyTracker(run_dir)
    stopped = ""
    start = state.round + 1
    if start > cfg.num_server_rounds:
        log.info("nothing to do: the checkpoint is at round %d of %d", state.round, cfg.num_server_rounds)
    for server_round in range(start, cfg.num_server_rounds + 1):
        t0 = time.perf_counter()
        stopped = _too_few_with_budget(grid, privacy, cfg.min_train_nodes)
        if stopped:
            log.warning("stopping before round %d: %s", server_round, stopped)
            break
        updates, rejections, declines, stopped = _train_round(grid, strategy, model, arrays, cfg, privacy,
                                                              server_round, sent, secagg)  # fmt: skip
        if stopped or updates is None:
            log.warning("stopping at round %d: %s", server_round, stopped)
            break
        arrays, train_metrics, aggregated = _aggregate(strategy, model, arrays, updates, server_round)
        t_train = time.perf_counter() - t0
        valid = _evaluate(grid, strategy, server_round, arrays, sent, "valid", cfg.round_timeout)
        record: dict[str, Any] = {
            "round": server_round, "train": _metrics(train_metrics), "valid": valid,
            "clients_trained": len(updates.kept), "aggregated": aggregated, "clients_declined": declines,
            "rejected": [{"node_id": r.node_id, "reason": r.reason} for r in rejections],
            "seconds_train": t_train, "seconds": time.perf_counter() - t0,
            # Each sampled client downloads the global trainable arrays and uploads the same set
            # (under SecAgg+, its masked vector instead: integers, so larger; plus keys and shares).
            "bytes_per_client_each_way": int(sum(a.numpy().nbytes for a in arrays.values())),
            **({"bytes_per_client_up_masked": updates.upload_bytes} if updates.upload_bytes else {}),
            **({"valid_server": server_eval(model, "valid")} if server_eval is not None else {}),
        }  # fmt: skip
        if central := central_spent(strategy, sum("central_dp" in h for h in state.history)):
            record["central_dp"] = central
            log.info("central DP: client-level epsilon %.3f at delta %g after %d releases (PLD over the whole run, "
                     "the privacy report's figure; Flower's 'Privacy spent' line is its own RDP account since this "
                     "ServerApp started: %.3f)", central["epsilon"], central["delta"], central["releases"],
                     central["flower_epsilon"])  # fmt: skip
        _checkpoint(run_dir, model, strategy, state, record, cfg.num_server_rounds)
        if cfg.early_stopping_rounds and state.stale_rounds >= cfg.early_stopping_rounds:
            log.info("early stopping: %d rounds without validation gain", state.stale_rounds)
            break
    return _final_test(grid, strategy, model, cfg, run_dir, state, arrays, sent, start, stopped, consent, server_eval)


def _too_few_with_budget(grid: Grid, privacy: PrivacyTracker, min_train_nodes: int) -> str:
    """Why the run must stop before this round because spent budgets leave too few nodes ('' to
    go on). Too few because nodes have not connected yet (a deployment's nodes start when they
    start) is the strategy's to wait out."""
    if not privacy.exhausted:
        return ""
    left = len(ActiveGrid(grid, privacy.exhausted).get_node_ids())
    return f"only {left} clients have privacy budget left (min-train-nodes is {min_train_nodes})" if left < min_train_nodes else ""


def _aggregate(
    strategy: Strategy, model: Recommender, arrays: ArrayRecord, updates: RoundUpdates, server_round: int,
) -> tuple[ArrayRecord, MetricRecord | None, bool]:  # fmt: skip
    """The round's new global arrays (loaded into `model`), the strategy's training metrics, and
    whether it aggregated at all (if not, the global model is unchanged). Under central DP every
    sampled client counts in the mean, a dropout as a zero update."""
    trained = updates.kept
    if is_central_dp(strategy):
        trained = fixed_denominator(trained, updates.sampled, arrays)
    new_arrays, train_metrics = strategy.aggregate_train(server_round, trained)
    if new_arrays is None:
        log.warning("round %d: the strategy did not aggregate; the global model is unchanged", server_round)
        return arrays, train_metrics, False
    load_flat(model, weights_vector(new_arrays, num_trainable(model)))
    return new_arrays, train_metrics, True


def _checkpoint(
    run_dir: Path, model: Recommender, strategy: Strategy, state: ServerState, record: dict[str, Any], rounds: int,
) -> None:  # fmt: skip
    """The round is done: into the history, the best round and the rounds without gain updated
    by validation NDCG@10, the checkpoint and metrics.json written, one log line."""
    server_round, score = record["round"], record["valid"].get(SELECT, -1.0)
    state.round = server_round
    state.history.append(record)
    if score > state.best_ndcg:
        state.best_ndcg, state.best_round, state.stale_rounds = score, server_round, 0
    else:
        state.stale_rounds += 1
    save_round(run_dir, model, state, optimizer_state(strategy))
    write_json(run_dir / "metrics.json", {"history": state.history})
    loss = record["train"].get("train-loss")  # under DP no loss leaves a node
    log.info("round %d/%d: %.1f s, %svalid NDCG@10 %.4f (best %.4f, round %d)",
             server_round, rounds, record["seconds"], "" if loss is None else f"train loss {loss:.4f}, ",
             score, state.best_ndcg, state.best_round)  # fmt: skip


def _final_test(
    grid: Grid, strategy: Strategy, model: Recommender, cfg: FederationConfig, run_dir: Path, state: ServerState,
    arrays: ArrayRecord, sent: dict[str, str], start: int, stopped: str, consent: bool, server_eval: ServerEval | None,
) -> dict[str, Any]:  # fmt: skip
    """The run's summary, written to metrics.json: the test metrics over every node's users,
    whatever per-round validation sampled (the DP wrapper samples through the strategy it wraps),
    on the best validation round's weights."""
    for s in (strategy, getattr(strategy, "strategy", None)):
        if s is not None:
            s.fraction_evaluate = 1.0  # type: ignore[attr-defined]
    final = best_weights(run_dir, state, model, arrays)
    test = _evaluate(grid, strategy, state.round, final, sent, "test", cfg.round_timeout)
    summary: dict[str, Any] = {"rounds": state.round, "best_round": state.best_round, "test_round": state.best_round or state.round,
                               "test": test, "history": state.history}  # fmt: skip
    if consent:  # the users whose data reached the model only through DP: the private model's test
        summary["test_non_consented"] = _evaluate(grid, strategy, state.round, final, sent, "test",
                                                  cfg.round_timeout, users=NON_CONSENTED)  # fmt: skip
    if stopped:
        summary["stopped"] = stopped
    note = untrained_note(start, state.round, bool(cfg.pretrained))
    if note:  # no round of this run completed: the test metrics describe its starting model, not a result
        summary["no_node_trained"], summary["test_weights"] = True, note
    if server_eval is not None:
        summary["test_server"] = server_eval(model, "test")
    write_json(run_dir / "metrics.json", summary)
    return summary
