"""The human-readable end of a run: a Markdown summary beside metrics.json."""

from __future__ import annotations

from typing import Any

STAGES = (("retrieval", "retrieval only"), ("ranking", "retrieval + ranking"))


def summary_markdown(run_id: str, summary: dict[str, Any]) -> str:
    test = summary["test"]
    lines = [
        f"# fedrec run {run_id}", "",
        f"Rounds: {summary['rounds']} (best validation round: {summary['best_round']})", "",
        "## Test metrics (federated evaluation over every node's users)", "",
        "| stage | full HR@10 | full NDCG@10 | full MRR | sampled HR@10 | sampled NDCG@10 |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for key, label in STAGES:
        get = lambda p, m: test.get(f"{key}-{p}-{m}", float("nan"))  # noqa: E731
        lines.append(f"| {label} | {get('full', 'hr@10'):.4f} | {get('full', 'ndcg@10'):.4f} | "
                     f"{get('full', 'mrr'):.4f} | {get('sampled', 'hr@10'):.4f} | "
                     f"{get('sampled', 'ndcg@10'):.4f} |")  # fmt: skip
    lines += ["", "## Rounds", "", "| round | seconds | train loss | valid NDCG@10 (two-stage) |",
              "|---|---|---|---|"]  # fmt: skip
    for r in summary["history"]:
        lines.append(f"| {r['round']} | {r['seconds']:.1f} | {r['train'].get('train-loss', float('nan')):.4f} "
                     f"| {r['valid'].get('ranking-full-ndcg@10', float('nan')):.4f} |")  # fmt: skip
    return "\n".join(lines) + "\n"
