"""Flower ServerApp: build the global model from the public item catalog, then run the rounds.

Outputs, in `output-dir/run-<run id>/`: `round-NNN/` checkpoints (loadable with
`Recommender.from_pretrained`), `metrics.json` (per-round history and final test metrics) and
`summary.md`.
"""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.checkpoints import ServerState, load_optimizer, load_round
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
from shared.handoffs import prompt_handoffs
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
        results = evaluate_model(model, dataset, stage)
        return {f"{s}-{p}-{m}": v for s, ps in results.items() for p, b in ps.items() for m, v in b.items()}

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
        audit = from_run_config(AuditConfig, context.run_config)
        if audit.audit_canaries:
            check_partitioning(from_run_config(PartitionConfig, context.run_config).partitioning)
        seed_everything(int(context.run_config.get("seed", 42)))
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
    strategy = make_strategy(fed, privacy, len(list(grid.get_node_ids())))
    restore_optimizer_state(strategy, moments)
    with prompt_handoffs():
        summary = run_rounds(
            grid, strategy, model, fed, run_dir, state,
            server_eval=server_evaluator(dataset) if fed.server_eval else None, catalog=catalog_fingerprint(catalog),
            secagg=secagg,
        )  # fmt: skip
    if privacy.dp or privacy.central_dp:
        try:
            report = write_report(run_dir)
            summary["privacy"] = {k: report[k] for k in ("neighbouring_relation", "accountant", "unit", "delta",
                                                         "status_counts", "num_clients", "epsilon_quantiles",
                                                         "all_recomputations_agree", "refusals", "central")}  # fmt: skip
        except FedrecError as err:  # a run stopped before anyone spent anything has nothing to report
            log.warning("no privacy report: %s", err)
    write_text(run_dir / "summary.md", summary_markdown(str(context.run_id), summary))
    log.info("results in %s (metrics.json, summary.md%s)", run_dir,
             ", privacy_report.json, privacy_report.html" if privacy.dp or privacy.central_dp else "")  # fmt: skip
