"""The commands end to end on generated data: what they print and the files they write."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import heavy_imports_of

from cli import main


def test_data_info_reports_counts_split_and_partitions(capsys, tiny, csv_dir: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "info.json"
    code = main(["data", "info", "--dataset", "csv", "--path", str(csv_dir),
                 "--partitioning", "iid", "--num-partitions", "3", "--json", str(out_json)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert f"| interactions | {len(tiny.rows)}" in printed
    assert "partitioning iid: 3 partitions" in printed
    info = json.loads(out_json.read_text())
    assert info["raw"] == {"users": 12, "items": len({r[1] for r in tiny.rows}), "interactions": len(tiny.rows)}
    assert info["split"]["valid"] == info["split"]["test"] == 12
    assert info["split"]["train"] == len(tiny.rows) - 24
    assert sum(p["users"] for p in info["partitioning"]["partitions"]) == 12


def test_evaluate_popularity_writes_both_protocols(capsys, csv_dir: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "sub" / "pop.json"
    code = main(["evaluate", "--baseline", "popularity", "--dataset", "csv",
                 "--path", str(csv_dir), "--json", str(out_json)])  # fmt: skip
    assert code == 0
    assert "| full" in capsys.readouterr().out
    result = json.loads(out_json.read_text())
    assert set(result) == {"full", "sampled"}
    for block in result.values():
        assert set(block) == {"hr@10", "ndcg@10", "mrr", "precision@10", "recall@10", "f1@10"}
        assert all(0.0 <= v <= 1.0 for v in block.values())
    assert not [p for p in out_json.parent.iterdir() if p.name.startswith(".")]  # no temp left


@pytest.mark.slow  # a fresh interpreter importing the CLI: over 20 s on a busy machine
def test_console_script_exits_nonzero_without_traceback(csv_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "evaluate", "--baseline", "popularity",
         "--dataset", "csv", "--path", str(csv_dir / "missing")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("fedrec: error:")
    assert "Traceback" not in done.stderr


def test_an_unwritable_output_dir_is_refused_before_any_work(capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["simulate", "--run-config", f"output-dir={blocker / 'out'}"])
    err = capsys.readouterr().err
    assert code == 2 and "output-dir" in err and str(blocker / "out") in err and "Traceback" not in err
    assert blocker.read_text() == ""  # nothing written, nothing half-made


def test_parsing_the_command_line_imports_no_model_stack() -> None:
    # Every `fedrec` process parses all sub-commands' options; an edge node starts several of them
    # (`deploy connection`, `deploy supernode`), each of which would otherwise import torch.
    heavy, _ = heavy_imports_of("from cli.commands import build_parser; build_parser()", timeout=60)
    assert heavy == []
