"""simulations/results/BENCHMARKS.md, assembled from the runners' JSON files, never typed in; then
the numbers README.md and docs/ quote, from the same files (simulations/doc_numbers.py).

    python -m simulations.page

Every number comes from a results file beside the page, which records the command, the commit
and the machine that produced it; the page names the runner to regenerate each table. Only the
literature anchors are written here, each with its paper.
"""

from __future__ import annotations

import json
import sys

from shared.atomic import write_text
from shared.errors import FedrecError
from simulations import doc_numbers, privacy_utility
from simulations.records import RESULTS, load, protocol, run_setting

MODE_NAMES = {"dp-hooks": "Opacus hooks", "dp-functorch": "functorch", "dp-ghost": "ghost clipping"}

ANCHORS = [
    ("ItemPop", "sampled-100 HR@10 0.454", "He et al., Neural Collaborative Filtering, WWW 2017"),
    ("NCF", "sampled-100 HR@10 about 0.70", "He et al., WWW 2017"),
    ("SASRec", "sampled-100 HR@10 0.8245, NDCG@10 0.5905", "Kang & McAuley, Self-Attentive Sequential Recommendation, ICDM 2018"),
    ("SASRec+ (full softmax)", "full-ranking HR@10 0.3152, NDCG@10 0.1821", "Klenitskiy & Vasilev, Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?, RecSys 2023"),
    ("BERT4Rec", "full-ranking HR@10 0.2821, NDCG@10 0.1516; sampled-100 HR@10 0.8040", "Petrov & Macdonald, A Systematic Review and Replicability Study of BERT4Rec, RecSys 2022"),
    ("FedMF", "sampled-100 HR@10 0.65", "Chai et al., Secure Federated Matrix Factorization, IEEE Intelligent Systems 2020"),
    ("FedNCF", "sampled-100 HR@10 0.61", "Perifanis & Efraimidis, Federated Neural Collaborative Filtering, Knowledge-Based Systems 2022"),
    ("PFedRec", "sampled-100 HR@10 0.73", "Zhang et al., Dual Personalization on Federated Recommendation, IJCAI 2023"),
]  # fmt: skip


# What each kind of row is compared with (papers in ANCHORS); their protocol is the column's.
ROW_ANCHORS = {
    "popularity": "ItemPop: sampled HR@10 0.454",
    "centralized": "SASRec: sampled HR@10 0.8245; SASRec+: full HR@10 0.3152, NDCG@10 0.1821. NCF: sampled HR@10 ~0.70",
    "federated": "FedMF 0.65, FedNCF 0.61, PFedRec 0.73: sampled HR@10",
}  # fmt: skip


def _row(label: str, full: dict, sampled: dict, source: str, kind: str) -> str:
    return (f"| {label} | {full['hr@10']:.4f} | {full['ndcg@10']:.4f} | {sampled['hr@10']:.4f} "
            f"| {sampled['ndcg@10']:.4f} | {ROW_ANCHORS[kind]} | {source} |")  # fmt: skip


def _flat(test: dict, prefix: str = "ranking-") -> tuple[dict, dict]:
    """(full, sampled) HR@10 and NDCG@10 from flat keys like 'ranking-full-hr@10' ('' prefix: 'full-hr@10')."""
    return tuple({m: test[f"{prefix}{split}-{m}"] for m in ("hr@10", "ndcg@10")}  # type: ignore[return-value]
                 for split in ("full", "sampled"))  # fmt: skip


def utility() -> list[str]:
    lines = ["## Utility on ML-1M (test item, leave-one-out)", "",
             "Full: the held-out item against the whole catalog minus seen items. Sampled: against 100 "
             "unseen items (the NCF/SASRec protocol). Two-stage model (retrieval + ranking) unless noted.", "",
             "| model | full HR@10 | full NDCG@10 | sampled HR@10 | sampled NDCG@10 | published anchor "
             "| results file |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    if (b := load("baselines")) and "movielens-1m" in b["results"]:
        p = b["results"]["movielens-1m"]["popularity"]
        lines.append(_row("popularity", p["full"], p["sampled"], "baselines.json", "popularity"))
    for name, label in (("centralized", "centralized, text + ID items, 25 epochs (CPU), BCE retrieval loss"),
                        ("loss-25-epochs", "centralized, text + ID items, 25 epochs (CPU), sampled softmax"),
                        ("centralized-h200", "centralized, text + ID items, 50 epochs (H200), BCE")):  # fmt: skip
        if (c := load(name)) and "full" in c["variants"]:
            t = c["variants"]["full"]["test"]["ranking"]
            lines.append(_row(label, t["full"], t["sampled"], f"{name}.json", "centralized"))
    for path in sorted(RESULTS.glob("fed_vs_central-*.json")):
        f = json.loads(path.read_text())["federated"]
        setting = run_setting(f["command"], "partitioning")
        label = f"federated, {setting}, rounds x local epochs {protocol(f['command'])}, no DP"
        lines.append(_row(label, *_flat(f["test"], prefix=""), path.name, "federated"))
    if pr := load("private_recipe"):
        lines += ["", "The private recipe (`make main`: pretraining on the consented 10%, then DP-SGD of the head over "
                  "10 regional silos at epsilon 8 each), on the test items of the users who did not consent "
                  "(`private_recipe.md`):", "",
                  "| model | full HR@10 | full NDCG@10 | sampled HR@10 | sampled NDCG@10 | epsilon (max client) |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for row in pr["rows"]:
            m, eps = row["test"]["non_consented"], row.get("client_epsilon_max")
            lines.append(f"| {row['name']} | {m['full-hr@10']:.4f} | {m['full-ndcg@10']:.4f} | {m['sampled-hr@10']:.4f} "
                         f"| {m['sampled-ndcg@10']:.4f} | {'-' if eps is None else f'{eps:.2f}'} |")  # fmt: skip
    if mj := load("main-job"):
        m, n = mj["median"], len(mj["repeats"])
        lines += ["", f"`make main` itself, {n} repeats at `{mj['provenance']['commit'][:7]}` (medians; the repeats differ "
                  f"in the DP noise), same users: wall time {m['wall_seconds'] / 60:.1f} min; sampled HR@10 / full "
                  f"NDCG@10: main job {m['test']['sampled-hr@10']:.4f} / {m['test']['full-ndcg@10']:.4f}, pretrained "
                  f"{m['pretrained']['sampled-hr@10']:.4f} / {m['pretrained']['full-ndcg@10']:.4f}, popularity "
                  f"{m['popularity']['sampled-hr@10']:.4f} / {m['popularity']['full-ndcg@10']:.4f} (`main-job.md`)."]  # fmt: skip
    if r := load("retrieval_loss"):
        b, sm = r["valid_epoch15"]["bce"], r["valid_epoch15"]["softmax"]
        lines += ["", "The retrieval loss at equal epochs (15, CPU), pretraining on the 10% consented users, "
                  f"validation two-stage full NDCG@10 / sampled HR@10: BCE {b['full_ndcg']:.4f} / "
                  f"{b['sampled_hr']:.4f}, sampled softmax {sm['full_ndcg']:.4f} / {sm['sampled_hr']:.4f} "
                  "(`retrieval_loss.md`)."]  # fmt: skip
    if h := load("hard-negatives"):
        pairs = [(h["runs"][f"{ds}-old"], h["runs"][f"{ds}-new"]) for ds in ("movielens-1m", "movielens-100k")]
        lines += ["", "The ranker's hard negatives from the training pass's own states (the default) against a "
                  "second, eval-mode encoding of the history, single centralized runs, test two-stage full NDCG@10: "
                  + "; ".join(f"{old['dataset']} {old['epochs']} epochs {old['test']['ranking-full']['ndcg@10']:.4f} -> "
                              f"{new['test']['ranking-full']['ndcg@10']:.4f} ({old['seconds']} s -> {new['seconds']} s)"
                              for old, new in pairs)
                  + " (`hard-negatives.md`)."]  # fmt: skip
    lines += ["", "Regenerate: `python -m simulations.baselines`, `python -m simulations.centralized`, "
              "`python -m simulations.fed_vs_central ...` (commands in each file).",
              "", "Anchors (published, not measured here; each under its paper's own protocol, stated "
              "beside it):", ""]  # fmt: skip
    lines += [f"- {name}: {value} ({paper})" for name, value, paper in ANCHORS]
    return lines


def cost() -> list[str]:
    lines = ["## Cost", ""]
    if fed := load("federated"):
        lines += ["| federated run | runs | s/round (median) | peak RSS MiB | MiB per client each way |", "|---|---|---|---|---|"]
        for r in fed["runs"]:
            lines.append(f"| `{r['command']}` | {r.get('repeats', 1)} | {r['seconds_per_round_median']:.1f} | {r['peak_rss_mib']} "
                         f"| {r['bytes_per_client_each_way'] / 2**20:.2f} |")  # fmt: skip
        lines += ["", "Regenerate: `python -m simulations.federated --name NAME --run-config ...`.", ""]
    for device in ("cpu", "cuda"):
        if d := load(f"dp_step-{device}"):
            s = d["steps"]
            modes = ", ".join(f"{v['ratio_to_plain']:.2f} ({MODE_NAMES.get(k, k)})" for k, v in s.items() if k != "plain")
            lines.append(f"- DP step / plain step on {device} ({d['provenance']['machine']['cpu']}): {modes}; "
                         f"plain step {s['plain']['median_ms']:.1f} ms. `python -m simulations.dp_step --device {device}`")  # fmt: skip
    for path in sorted(RESULTS.glob("overhead*.json"), key=lambda p: (p.stem != "overhead", p.stem)):
        if o := load(path.stem):
            cpus, settings = o.get("client_cpus", 0), o.get("set", [])
            share = (f"{cpus} core per ClientApp" if cpus else "one ClientApp at a time") + "".join(f", {kv}" for kv in settings)
            without = o.get("ratio_without_local_work")
            lines.append(f"- Client updates per second, fedrec / trivial Flower app, same run ({share}; "
                         f"{o['fedrec']['local_work_ms_median']:.0f} ms of local training a client): {o['ratio']:.2f} "
                         f"({o['fedrec']['updates_per_second_median']:.1f} vs {o['trivial']['updates_per_second_median']:.1f})"
                         + ("" if without is None else f"; with the clients' local work taken out: {without:.2f}")
                         + (f"; against the trivial app with fedrec's GIL switch interval: {o['ratio_to_same_switch_interval']:.2f}"
                            if "ratio_to_same_switch_interval" in o else "")
                         + f". `python -m simulations.overhead{f' --client-cpus {cpus}' if cpus else ''}"
                         + (f" --set {' '.join(settings)}`" if settings else "`"))  # fmt: skip
    for path in sorted(RESULTS.glob("client_step*.json")):
        if c := load(path.stem):
            lines.append(f"- One-user client step alone (plain process, {c['users']} random {c['dataset']} users, "
                         f"median of {c['repeats']} passes), commit {c['provenance']['commit'][:7]}: "
                         f"{c['median_ms']:.2f} ms (`{path.stem}.md`). `python -m simulations.client_step`")  # fmt: skip
    if (RESULTS / "overhead-repeats" / "README.md").is_file():
        lines.append("- Every overhead run of a session, the record's repeats and an earlier commit's among them, "
                     "pooled: `overhead-repeats/README.md`.")  # fmt: skip
    if e := load("edge_footprint"):
        lines.append(f"- One edge SuperNode (real deployment, TLS), ML-1M region {e['partition_id']} ({e['users']} users), DP: "
                     f"{e['seconds_per_round_median']:.1f} s per round (median of {e.get('repeats', 1)} runs), "
                     f"peak RSS {e['peak_rss_mib']} MiB. "
                     "`python -m simulations.edge_footprint`")  # fmt: skip
    return lines


def serving() -> list[str]:
    if not (sv := load("serving")):
        return []
    lines = ["## Serving", "", "One user's top-10: full-catalog retrieval (exact), then the ranker over 100 candidates; "
             "model loaded once. `python -m simulations.serving`", "",
             "| catalog | items | p50 ms | p95 ms |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['catalog']} | {r['items']:,} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |" for r in sv["rows"]]
    return lines


def serve_load() -> list[str]:
    """`fedrec serve` under wrk: the record (serve_load.json) and every other run kept beside it."""
    names = ["serve_load", *sorted(path.stem for path in RESULTS.glob("serve_load-*.json"))]
    if not (records := [(name, r) for name in names if (r := load(name))]):
        return []
    lines = ["## Serving under load", "",
             "`fedrec serve` on loopback under wrk, the median of each level's runs; the load is the machine's "
             "one-minute load average. `python -m simulations.serve_load --checkpoint DIR`", "",
             "| record | commit | requests | connections | p50 ms | p99 ms | req/s | load |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    return lines + [f"| {name}.md | {r['provenance']['commit'][:7]} | {m['scenario']} | {m['connections']} "
                    f"| {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | {m['rps']:.0f} | {m['load1']:.1f} |"
                    for name, r in records for m in r["medians"]]  # fmt: skip


def search() -> list[str]:
    if not (ks := load("search_known_item")):
        return []
    every = ks["all"]
    return ["## Known-item search", "",
            f"`fedrec search` with each of the {every['queries']:,} {ks['dataset']} titles, its year removed, as the "
            f"query: MRR {every['mrr']:.3f}, HR@1 {every['hr@1']:.3f}, HR@10 {every['hr@10']:.4f}, median rank "
            f"{every['median_rank']:g} (`search_known_item.md`). `python -m simulations.search_known_item --checkpoint DIR`"]  # fmt: skip


def scale() -> list[str]:
    if not (sc := load("scale")):
        return []
    lines = ["## Scale: one simulated client per ML-1M user", "",
             f"{sc['fraction']:g} of the clients trained and validated per round, no DP. `python -m simulations.scale`", "",
             "| clients | runs | s/round (median after the first) | peak RSS MiB |", "|---|---|---|---|"]  # fmt: skip
    return lines + [f"| {r['clients']:,} | {r.get('repeats', 1)} | {r['seconds_per_round_after_first']:.1f} | {r['peak_rss_mib']:,} |"
                    for r in sorted(sc["rows"], key=lambda r: r["clients"])]  # fmt: skip


def audit() -> list[str]:
    if not (au := load("canary_audit")):
        return []
    lines = ["## Privacy audit: epsilon lower bound from canaries", "",
             f"{au['canaries']} canary users, each trained on with probability 1/2, in one federated run; a 95% lower "
             "bound on each client's epsilon from guessing which were (Steinke et al., NeurIPS 2023). "
             "`python -m simulations.audit`", "",
             "| run | reported epsilon | lower bound (95%) | attack AUC | command |", "|---|---|---|---|---|"]  # fmt: skip
    return lines + [f"| {r['name']} | {'no DP' if r['reported_epsilon'] is None else round(r['reported_epsilon'], 2)} "
                    f"| {r['epsilon_lower_bound']:.2f} | {r['attack_auc']:.3f} | `{r['command']}` |"
                    for r in au["rows"]]  # fmt: skip


def federated_vs_central() -> list[str]:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("fed_vs_central-*.json"))]
    if not rows:
        return []
    lines = ["## Federated vs centralized, same model, same run", "",
             "Full-catalog test NDCG@10 of the two-stage model; centralized epochs against federated rounds "
             "x local epochs.", "",
             "| setting | centralized epochs | centralized NDCG@10 | federated rounds x local epochs | federated NDCG@10 "
             "| ratio | federated command |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        c, f = r["centralized"]["test"]["full-ndcg@10"], r["federated"]["test"]["full-ndcg@10"]
        lines.append(f"| {r['partitioning']} | {r['centralized']['epochs']} | {c:.4f} "
                     f"| {protocol(r['federated']['command'])} | {f:.4f} "
                     f"| {r['ratio']['full-ndcg@10']:.2f} | `{r['federated']['command']}` |")  # fmt: skip
    return lines + ["", "`python -m simulations.fed_vs_central --partitioning region|user [--epochs E --rounds R "
                        "--local-epochs L --strategy S]`"]  # fmt: skip


def privacy() -> list[str]:
    """The privacy-utility grid, user-level DP throughout, with popularity and the pretrained model
    on the same users (simulations/privacy_utility.py writes it)."""
    return privacy_utility.page_section(RESULTS)


def figures(*patterns: str) -> list[str]:
    """The charts (simulations/charts.py) drawn beside the results files a section reads."""
    pngs = [png for pattern in patterns for png in sorted(RESULTS.glob(f"{pattern}.png"))]
    return [line for png in pngs for line in (f"![{png.stem}]({png.name})", "")]


def render() -> str:
    """BENCHMARKS.md as the records in simulations/results/ make it now."""
    lines = ["# fedrec benchmarks", "",
             "Generated by `python -m simulations.page` from the JSON files in this folder; each holds the "
             "command, commit and machine of its numbers, and most have a chart beside them "
             "(`python -m simulations.charts` redraws them all).", ""]  # fmt: skip
    sections = [(utility, ("baselines", "centralized*", "ablations*")), (federated_vs_central, ("fed_vs_central-*",)),
                (cost, ("federated", "overhead", "dp_step-*", "edge_footprint")), (scale, ("scale",)),
                (serving, ("serving",)), (serve_load, ()), (search, ()), (audit, ("canary_audit",))]  # fmt: skip
    for section, charts in sections:
        if body := section():
            lines += body + [""] + figures(*charts)
    lines += privacy()
    return "\n".join(lines) + "\n"


def main() -> int:
    """Write BENCHMARKS.md, then the numbers README.md and docs/ quote from the same records."""
    try:
        text, pages = render(), doc_numbers.filled()
        for path, new in [(RESULTS / "BENCHMARKS.md", text), *pages]:
            write_text(path, new)
            print(f"wrote {path}")
    except FedrecError as err:
        print(f"page: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
