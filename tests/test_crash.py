"""kill -9 of the server mid-round, then resume: the ledger counts every client and round once,
the last completed checkpoint is intact and the run finishes."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from conftest import as_pairs, make_tiny, tiny_run_config, write_csv
from safetensors.torch import load_file

from server import ledger
from cli import main

ROUNDS = 3
pytestmark = pytest.mark.slow  # a real simulation, killed and resumed


def config(data: Path, out: Path, cache: Path) -> list[str]:
    # A fixed noise multiplier and a budget no run here can spend: a redone round is spent twice
    # by its clients (both trainings happened), which must not end the run early.
    return ["--num-supernodes", "3", "--run-config", *as_pairs(tiny_run_config(
        data, cache, out, num_server_rounds=ROUNDS, noise_multiplier=1.0, target_epsilon=1000))]


def test_kill_9_mid_round_then_resume(tmp_path: Path) -> None:
    data = write_csv(make_tiny(num_users=30, seed=4), tmp_path / "csv")
    out, cache = tmp_path / "out", tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "cli", "simulate", *config(data, out, cache)],
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
    assert (run_dir / "privacy_report.json").exists()
    assert all(torch.isfinite(w).all() for w in load_file(run_dir / "round-003" / "model.safetensors").values())
