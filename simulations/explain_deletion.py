"""Are `fedrec recommend --explain`'s attributions faithful? A deletion test on ML-1M.

    python -m simulations.explain_deletion --checkpoint DIR [--users 200] [--remove 1,3,5]

For random users with at least 20 history items: recommend their top item, attribute its score
with Integrated Gradients (shared.models.explain), then take out of the history (the last
max_len items, the ones the model reads)

- the m items with the highest attribution, and
- m items drawn at random (--draws draws, averaged),

and score the item again through ModelScorer, the model's own scoring path. A faithful
attribution lowers the score more when its top items go than when random ones do. Records, per
m, the mean drop of each, the share of users for whom the top-attributed deletion drops more, and
a one-sided Wilcoxon signed-rank test of the paired drops. Writes
simulations/results/explain_deletion.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from simulations.provenance import provenance, provenance_lines, write_results

RESULTS = Path(__file__).parent / "results"
MIN_HISTORY = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="an ML-1M checkpoint")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--remove", default="1,3,5", help="how many history items to take out")
    parser.add_argument("--draws", type=int, default=5, help="random deletions per user and m")
    parser.add_argument("--steps", type=int, default=32, help="Integrated Gradients steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch
    from scipy.stats import wilcoxon

    from shared.config import DataConfig
    from shared.data.dataset import load_dataset
    from shared.models.batches import feature_matrix
    from shared.models.checkpoint import check_catalog, load_checkpoint
    from shared.models.explain import Explainer, scores_without
    from shared.models.scoring import ModelScorer

    torch.manual_seed(args.seed)
    model = load_checkpoint(args.checkpoint)
    dataset = load_dataset(DataConfig(dataset=model.config["dataset"]))
    check_catalog(model, dataset)
    scorer = ModelScorer(model)
    explainer = Explainer(model, scorer, steps=args.steps)
    removals = [int(m) for m in args.remove.split(",")]
    rng = np.random.default_rng(args.seed)
    eligible = [u for u in range(dataset.num_users) if len(dataset.sequence(u)) >= MIN_HISTORY]
    users = rng.choice(eligible, size=min(args.users, len(eligible)), replace=False)
    drops: dict[int, dict[str, list[float]]] = {m: {"top": [], "random": []} for m in removals}
    gaps, scores = [], []
    began = time.perf_counter()
    for u in users:
        history = dataset.sequence(int(u))[-scorer.max_len :]
        features = feature_matrix(dataset, np.array([u]))[0]
        (item, _), = scorer.recommend(history, features, 1)
        (e,) = explainer.explain(history, features, [item])
        gaps.append(e.gap)
        scores.append(e.score)
        order = np.argsort([-a for _, a in e.history], kind="stable")  # positions, most attributed first
        for m in removals:
            random_sets = [rng.choice(len(history), size=m, replace=False) for _ in range(args.draws)]
            after = scores_without(scorer, history, features, item, [order[:m], *random_sets])
            drops[m]["top"].append(e.score - float(after[0]))
            drops[m]["random"].append(e.score - float(np.mean(after[1:])))
    seconds = time.perf_counter() - began
    rows = []
    for m in removals:
        top, rand = np.array(drops[m]["top"]), np.array(drops[m]["random"])
        test = wilcoxon(top, rand, alternative="greater")
        rows.append({"removed": m, "mean_drop_top": float(top.mean()), "mean_drop_random": float(rand.mean()),
                     "median_drop_top": float(np.median(top)), "median_drop_random": float(np.median(rand)),
                     "share_top_drops_more": float(np.mean(top > rand)), "wilcoxon_p": float(test.pvalue),
                     "passed": bool(top.mean() > rand.mean())})  # fmt: skip
    report = {"provenance": provenance(), "checkpoint": str(args.checkpoint), "dataset": dataset.name,
              "checkpoint_info": checkpoint_info(args.checkpoint),
              "users": len(users), "steps": args.steps, "draws": args.draws, "seconds": seconds,
              "mean_score": float(np.mean(scores)), "mean_abs_gap": float(np.mean(np.abs(gaps))), "rows": rows,
              "per_user": {str(m): drops[m] for m in removals}}  # fmt: skip
    write_results(args.out, "explain_deletion", report, markdown(report))
    return 0


def checkpoint_info(directory: Path) -> dict:
    """How the checkpoint was trained, from its metrics.json: the explanations explain this model."""
    import json

    path = directory / "metrics.json"
    if not path.is_file():
        return {}
    m = json.loads(path.read_text())
    return {"epochs_run": m.get("epochs_run"), "test_ranking_full_ndcg@10": m["test"]["ranking"]["full"]["ndcg@10"],
            "test_ranking_sampled_hr@10": m["test"]["ranking"]["sampled"]["hr@10"]}  # fmt: skip


def markdown(r: dict) -> str:
    info = r.get("checkpoint_info") or {}
    trained = (f" (`fedrec train`, {info['epochs_run']} epoch(s): test NDCG@10 {info['test_ranking_full_ndcg@10']:.3f} "
               f"full, HR@10 {info['test_ranking_sampled_hr@10']:.3f} sampled)") if info else ""
    return "\n".join([
        f"# Explanations' faithfulness: a deletion test on {r['dataset']}", "",
        *provenance_lines(r["provenance"]), "",
        f"Checkpoint `{r['checkpoint']}`{trained}. For {r['users']} random users with at least {MIN_HISTORY} history items: "
        "their top recommended item, its ranker logit attributed by Integrated Gradients "
        f"({r['steps']} steps) over the history item vectors and side-feature embeddings, then m history items "
        "taken out and the item scored again by the model (ModelScorer): the m most attributed, against m at "
        f"random ({r['draws']} draws averaged). A drop is the score before minus after. "
        f"Mean score {r['mean_score']:.3f}; mean |completeness gap| {r['mean_abs_gap']:.2e}. "
        f"{r['seconds']:.0f} s on this machine's shared cores (other work ran beside it).", "",
        "| m removed | mean drop, top-attributed | mean drop, random | median top | median random "
        "| users where top drops more | Wilcoxon p (top > random) | passed |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {x['removed']} | {x['mean_drop_top']:.4f} | {x['mean_drop_random']:.4f} | {x['median_drop_top']:.4f} "
          f"| {x['median_drop_random']:.4f} | {x['share_top_drops_more']:.0%} | {x['wilcoxon_p']:.1e} "
          f"| {'yes' if x['passed'] else 'NO'} |" for x in r["rows"]], "",
        "Passed: removing the top-attributed history items lowers the item's score more, on average over "
        "users, than removing as many random ones.", "",
    ]) + "\n"  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
