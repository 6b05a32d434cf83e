"""kill -9 of the server mid-round, then resume: the ledger counts every client and round once,
the last completed checkpoint is intact and the run finishes."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
from conftest import make_tiny, write_csv
from safetensors.torch import load_file

from server import ledger
from shared.cli import main

ROUNDS = 3


def config(data: Path, out: Path, cache: Path) -> list[str]:
    # A fixed noise multiplier and a budget no run here can spend: a redone round is spent twice
    # by its clients (both trainings happened), which must not end the run early.
    return ["--num-supernodes", "3", "--run-config", "dataset=csv", f"data-path={data}", f"cache-dir={cache}",
            "partitioning=iid", "num-partitions=3", "min-train-nodes=3", "dim=16", "num-layers=1", "max-len=12",
            "batch-size=8", "num-negatives=8", "retrieve-top-n=10", f"output-dir={out}",
            f"num-server-rounds={ROUNDS}", "noise-multiplier=1.0", "target-epsilon=1000"]  # fmt: skip


def test_kill_9_mid_round_then_resume(tmp_path: Path) -> None:
    data = write_csv(make_tiny(num_users=30, seed=4), tmp_path / "csv")
    out, cache = tmp_path / "out", tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "simulate", *config(data, out, cache)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while True:  # until a client has trained round 2: the server is mid-round
            states = list(out.glob("run-*/node-state/privacy-*.json"))
            if any(2 in [h["round"] for h in json.loads(s.read_text() or "{}").get("history", [])] for s in states):
                break
            assert time.monotonic() < deadline and proc.poll() is None, "round 2 never started"
            time.sleep(0.1)
        servers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "flwr-simulation" in " ".join(p.cmdline())]
        assert servers, "no ServerApp process found"
        for p in servers:
            p.send_signal(signal.SIGKILL)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run_dir,) = out.glob("run-*")
    assert not (run_dir / "round-002").exists()
    checkpoint = (run_dir / "round-001" / "model.safetensors").read_bytes()

    assert main(["simulate", *config(data, tmp_path / "out2", cache), f"resume-from={run_dir / 'round-001'}"]) == 0
    assert (run_dir / "round-001" / "model.safetensors").read_bytes() == checkpoint
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [r["round"] for r in history] == [1, 2, 3]
    entries = ledger.read_ledger(run_dir)
    assert sorted((e["client_id"], e["round"]) for e in entries) == [(f"iid-{p}", r) for p in range(3) for r in (1, 2, 3)]
    report = json.loads((run_dir / "privacy_report.json").read_text())
    assert report["all_recomputations_agree"]
    assert all(torch.isfinite(w).all() for w in load_file(run_dir / "round-003" / "model.safetensors").values())
