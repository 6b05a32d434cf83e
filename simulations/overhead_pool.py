"""Several `simulations.overhead` records side by side, and their per-run ratios pooled by commit.

    python -m simulations.overhead_pool FILE.json [FILE.json ...] --out DIR/README.md

One overhead record is a few runs on a machine whose speed drifts within the hour; a session
that ran the benchmark several times keeps every record and pools them here instead of quoting
the best. The files are listed in the order given (give them in the order they were run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from shared.atomic import write_text


def _load(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"overhead_pool: error: {path}: {err}") from None
    if not isinstance(record, dict) or "runs" not in record or "commit" not in record.get("provenance", {}):
        raise SystemExit(f"overhead_pool: error: {path}: not a simulations.overhead record")
    return record


def pooled_page(paths: list[Path]) -> str:
    """Markdown: one row per record, then each commit's per-run ratios pooled."""
    lines = ["# Overhead records, side by side", "",
             f"`python -m simulations.overhead_pool {' '.join(str(p) for p in paths)}`", "",
             "Ratio: fedrec / trivial app, client updates per second, same run. Each record's command and "
             "machine are in its own file.", "",
             "| record | commit | finished (UTC) | runs | trivial updates/s (median) | fedrec local ms (median) "
             "| ratio of medians | per-run ratios |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    pooled: dict[str, list[float]] = {}
    for path in paths:
        record = _load(path)
        per_run = [r["fedrec"] / r["trivial"] for r in record["runs"]]
        commit = record["provenance"]["commit"][:7]
        pooled.setdefault(commit, []).extend(per_run)
        lines.append(f"| `{path.name}` | {commit} | {record['provenance'].get('date', '?')[:16].replace('T', ' ')} "
                     f"| {len(per_run)} | {record['trivial']['updates_per_second_median']:.1f} "
                     f"| {record['fedrec']['local_work_ms_median']:.1f} | {record['ratio']:.2f} "
                     f"| {', '.join(f'{x:.2f}' for x in per_run)} |")  # fmt: skip
    lines += ["", "Per-run ratios pooled by commit:", ""]
    for commit, ratios in pooled.items():
        lines.append(f"- {commit}: median {statistics.median(ratios):.2f} over {len(ratios)} runs (min "
                     f"{min(ratios):.2f}, max {max(ratios):.2f}; {sum(x >= 0.5 for x in ratios)} of "
                     f"{len(ratios)} at 0.5 or above)")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path, nargs="+", help="overhead*.json files, in the order they were run")
    parser.add_argument("--out", type=Path, required=True, help="the Markdown page to write")
    args = parser.parse_args(argv)
    page = pooled_page(args.records)
    write_text(args.out, page)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
