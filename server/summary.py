"""The human-readable end of a run: a Markdown summary beside metrics.json."""

from __future__ import annotations

from typing import Any

STAGES = (("retrieval", "retrieval only"), ("ranking", "retrieval + ranking"))


def summary_markdown(run_id: str, summary: dict[str, Any]) -> str:
    test = summary["test"]
    lines = [
        f"# fedrec run {run_id}", "",
        f"Rounds: {summary['rounds']} (best validation round: {summary['best_round']}; "
        f"test metrics on round {summary.get('test_round', summary['rounds'])}'s weights)", "",
        "## Test metrics (federated evaluation over every node's users)" if not summary.get("test_weights")
        else f"## Test metrics of {summary['test_weights']}", "",
        "| stage | full HR@10 | full NDCG@10 | full MRR | sampled HR@10 | sampled NDCG@10 |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    blocks = [("", test)] + ([(", users who did not consent", summary["test_non_consented"])]
                             if "test_non_consented" in summary else [])  # fmt: skip
    for who, metrics in blocks:
        for key, label in STAGES:
            get = lambda p, m: metrics.get(f"{key}-{p}-{m}", float("nan"))  # noqa: E731
            lines.append(f"| {label}{who} | {get('full', 'hr@10'):.4f} | {get('full', 'ndcg@10'):.4f} | "
                         f"{get('full', 'mrr'):.4f} | {get('sampled', 'hr@10'):.4f} | "
                         f"{get('sampled', 'ndcg@10'):.4f} |")  # fmt: skip
    if summary.get("test_weights"):
        lines += ["", f"**Not a result of this run:** these test metrics are of {summary['test_weights']}."]
    if test.get("nodes-withheld"):
        lines += ["", f"{int(test['nodes-withheld'])} node(s) had fewer than min-eval-users users and sent no metrics."]
    lines += ["", "## Rounds", "", "| round | seconds | train loss | valid NDCG@10 (two-stage) |",
              "|---|---|---|---|"]  # fmt: skip
    for r in summary["history"]:
        loss = r["train"].get("train-loss")  # under DP no loss leaves a node: none to show
        lines.append(f"| {r['round']} | {r['seconds']:.1f} | {'-' if loss is None else f'{loss:.4f}'} "
                     f"| {r['valid'].get('ranking-full-ndcg@10', float('nan')):.4f} |")  # fmt: skip
    if summary.get("stopped"):
        lines += ["", f"Stopped early: {summary['stopped']}."]
    if "privacy" in summary:
        lines += ["", "## Privacy (details in privacy_report.html)", ""] + privacy_lines(summary["privacy"])
    return "\n".join(lines) + "\n"


def privacy_lines(p: dict[str, Any]) -> list[str]:
    lines = []
    if p["num_clients"]:
        q = p["epsilon_quantiles"]
        lines.append(f"Local DP-SGD. Unit: {p['unit']}. Neighbouring relation: {p.get('neighbouring_relation')}. "
                     f"Accountant: {p['accountant']}. delta <= {p['delta']:.2e}. "
                     f"Final epsilon (computed from the ledger's histories): median {q['p50']:.3f}, "
                     f"max {q['p100']:.3f}. Budget status: {p['status_counts']}.")  # fmt: skip
    for r in p.get("refusals", []):
        lines.append(f"Node {r['node_id']} (partition {r['partition_id']}) refused round {r['round']}: "
                     f"{r['key']}: {r['reason']}.")  # fmt: skip
    if p["central"]:
        c = p["central"]
        flower = "" if c.get("flower_epsilon") is None else \
            f" Flower's log shows its own RDP figure, {c['flower_epsilon']:.3f}, counted since the ServerApp last started."
        lines.append(f"Central DP (DP-FedAvg): client-level epsilon {c['epsilon']:.3f} at delta {c['delta']:.2e} "
                     f"({c['accountant']}).{flower}")  # fmt: skip
    return lines
