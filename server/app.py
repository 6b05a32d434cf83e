"""Flower ServerApp: build the global model from the public item catalog, then run the rounds.

Outputs, in `output-dir/run-<run id>/`: `round-NNN/` checkpoints (loadable with
`Recommender.from_pretrained`), `metrics.json` (per-round history and final test metrics) and
`summary.md`.
"""

from __future__ import annotations

import logging
from typing import NoReturn

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.checkpoints import ServerState, load_optimizer, load_round
from server.outcomes import RunFailed, check_node_catalogs
from server.popularity import check_popularity_prior, popularity_prior, set_item_bias
from server.privacy_report import write_report
from server.rounds import run_rounds
from server.secure import check_secure_aggregation
from server.strategy import check_central_dp, make_strategy, restore_optimizer_state
from server.summary import summary_markdown
from shared.atomic import check_writable, write_text
from shared.config import (AuditConfig, DataConfig, FederationConfig, ModelConfig, PartitionConfig, PrivacyConfig,
                           SecureAggregationConfig, from_run_config)
from shared.data.dataset import catalog_artifact, catalog_fingerprint, catalog_of, empty_dataset, load_dataset
from shared.data.sources import default_cache_dir
from shared.errors import FedrecError
from shared.eval.metrics import flatten
from shared.gil_switch import short_switch_interval
from shared.models.checkpoint import load_pretrained
from shared.models.recommender import Recommender
from shared.models.training import build_model, evaluate_model, seed_everything
from shared.privacy.canaries import check_partitioning, record_canaries

log = logging.getLogger("flwr.fedrec")  # a child of Flower's logger: shown, and streamed by flwr run
app = ServerApp()


def server_evaluator(dataset):  # type: ignore[no-untyped-def]
    """Simulation only: the server evaluates on its own copy of the data. Flattened like the
    clients' metrics so the two can be compared key by key."""

    def evaluate(model: Recommender, stage: str) -> dict[str, float]:
        return flatten(evaluate_model(model, dataset, stage))

    return evaluate


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        fed = from_run_config(FederationConfig, context.run_config)
        data = from_run_config(DataConfig, context.run_config)
        model_cfg = from_run_config(ModelConfig, context.run_config)
        privacy = from_run_config(PrivacyConfig, context.run_config)  # refuse bad DP settings now
        check_central_dp(fed, privacy)
        secagg = from_run_config(SecureAggregationConfig, context.run_config)
        check_secure_aggregation(fed.strategy, secagg)
        check_popularity_prior(privacy, from_run_config(PartitionConfig, context.run_config), model_cfg)
        audit = from_run_config(AuditConfig, context.run_config)
        partition = from_run_config(PartitionConfig, context.run_config)
        if audit.audit_canaries:
            check_partitioning(partition.partitioning)
        seed_everything(partition.seed)
        # The server holds the public catalog and nothing else: with catalog-path it reads that
        # directory only, never an interaction file. A simulation without one derives the
        # catalog from its one dataset, as its clients do (and may evaluate on it: server-eval).
        if data.catalog_path and fed.server_eval:
            raise FedrecError("server-eval evaluates on the server's own copy of the data; with catalog-path "
                              "the server holds only the catalog (drop one of them)")
        dataset = None if data.catalog_path else load_dataset(data)
        catalog = catalog_artifact(data.catalog_path) if data.catalog_path else catalog_of(dataset)
        model = build_model(empty_dataset(catalog), model_cfg, data.cache_path or default_cache_dir())
        if fed.pretrained and not fed.resume_from:  # a resumed run's weights are its checkpoint's
            load_pretrained(fed.pretrained, model)
        state = load_round(fed.resume_from, model) if fed.resume_from else ServerState()
        moments = load_optimizer(fed.resume_from) if fed.resume_from else {}
        check_writable(fed.run_dir(context.run_id), "the run directory")
    except FedrecError as err:
        log.error("fedrec: error: %s", err)
        raise SystemExit(2) from None
    run_dir = fed.run_dir(context.run_id)
    log.info("run directory %s; starting at round %d of %d", run_dir, state.round + 1, fed.num_server_rounds)
    if audit.audit_canaries:  # the nodes plant them (client/data.py); `fedrec audit` finds them here
        record_canaries(run_dir, audit.audit_canaries, audit.audit_seed, catalog.num_items)
    try:  # a node on another catalog is found now, by fingerprint, not as an error in every round
        check_node_catalogs(grid, catalog_fingerprint(catalog), fed.min_train_nodes, fed.round_timeout, partition.seed)
    except FedrecError as err:
        fail(str(err))
    if privacy.popularity_epsilon > 0 and state.round == 0:  # a resumed run's bias is in its checkpoint
        prior = popularity_prior(grid, run_dir, catalog_fingerprint(catalog), catalog.num_items, fed.round_timeout)
        if prior is not None:
            set_item_bias(model, prior)
    connected = len(list(grid.get_node_ids()))
    if privacy.central_dp and not privacy.population:
        log.warning("central DP: population not configured; taking the %d nodes connected now as N", connected)
    strategy = make_strategy(fed, privacy, connected, privacy.population)
    restore_optimizer_state(strategy, moments)
    with short_switch_interval():
        summary = run_rounds(
            grid, strategy, model, fed, run_dir, state,
            server_eval=server_evaluator(dataset) if fed.server_eval else None, catalog=catalog_fingerprint(catalog),
            secagg=secagg, consent=data.consent_fraction > 0,
        )  # fmt: skip
    if privacy.dp or privacy.central_dp:
        try:
            report = write_report(run_dir)
            summary["privacy"] = {k: report[k] for k in ("neighbouring_relation", "accountant", "unit", "delta",
                                                         "status_counts", "num_clients", "epsilon_quantiles",
                                                         "refusals", "central")}  # fmt: skip
        except FedrecError as err:  # a run stopped before anyone spent anything has nothing to report
            log.warning("no privacy report: %s", "no node trained in this run, so none spent any privacy budget"
                        if not summary["history"] else err)  # fmt: skip
    write_text(run_dir / "summary.md", summary_markdown(str(context.run_id), summary))
    written = [n for n in OUTPUTS if (run_dir / n).exists()]  # only what is there
    log.info("results in %s (%s)", run_dir, ", ".join(written))
    if summary.get("no_node_trained"):  # the test metrics are there, but they are no result of this run
        log.warning("not a result: the test metrics in %s are of %s", run_dir / "metrics.json", summary["test_weights"])
    if summary.get("stopped"):  # fewer than min-train-nodes trained: the run failed, whatever it wrote
        fail(f"the run failed: {summary['stopped']}")


OUTPUTS = ("metrics.json", "summary.md", "privacy_report.json", "privacy_report.html")


def fail(reason: str) -> NoReturn:
    """End the run as failed (flwr ls: finished:failed), with the reason on the log's last line."""
    log.error("fedrec: error: %s", reason)
    raise RunFailed(reason) from None  # the reason says it all: no chained traceback
