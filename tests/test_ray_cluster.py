"""`fedrec simulate --ray-address`: the simulated clients run on an existing Ray cluster, here a
head started for the test (`ray start --head`) and stopped after it.

Slow (a minute or two: a Ray head, a SuperLink and two rounds), so tiny data and a tiny model.
"""

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import as_pairs, make_tiny, tiny_run_config, write_csv

from cli import main
from shared.deploy.process import BIN, flower_env
from cli.local.superlink import _stop, free_port, listening


@pytest.fixture(scope="module")
def ray_head():
    """A one-machine Ray cluster of its own: its own port and temp dir (short: Ray's socket paths
    must fit 107 characters), stopped by ending the processes it started, never with `ray stop`,
    which would stop every Ray instance on the machine."""
    port, temp = free_port(), Path(tempfile.mkdtemp(prefix="fr-ray-", dir="/tmp"))
    cmd = [str(BIN / "ray"), "start", "--head", "--port", str(port), "--num-cpus", "2", "--disable-usage-stats",
           "--include-dashboard=false", "--temp-dir", str(temp), "--block"]  # fmt: skip
    with open(temp / "head.log", "w") as log:
        proc = subprocess.Popen(cmd, env=flower_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not start: {(temp / 'head.log').read_text()[-1500:]}")
            time.sleep(0.5)
        time.sleep(3)  # the GCS answers before the raylet has registered the node
        yield f"127.0.0.1:{port}", temp
    finally:
        _stop(proc)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_a_simulation_runs_on_an_existing_ray_cluster(ray_head, tmp_path: Path, capsys) -> None:
    address, temp = ray_head
    data = write_csv(make_tiny(), tmp_path / "csv")
    code = main(["simulate", "--num-supernodes", "3", "--ray-address", address, "--run-config",
                 *as_pairs(tiny_run_config(data, tmp_path / "cache", tmp_path / "out", num_server_rounds=2, dp=False))])
    assert code == 0, capsys.readouterr().err[-2000:]
    (run_dir,) = (tmp_path / "out").glob("run-*")
    assert [r["round"] for r in json.loads((run_dir / "metrics.json").read_text())["history"]] == [1, 2]
    # The simulation joined this cluster (the test itself never does): the head's session logged a
    # driver that connected to it, and the workers that ran its clients.
    logs = sorted(p.name for p in temp.glob("session_*/logs/*"))
    assert any(n.startswith("python-core-driver-") for n in logs), logs
    assert any(n.startswith("worker-") for n in logs), logs


def test_an_unreachable_ray_address_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["simulate", "--ray-address", f"127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fedrec: error: --ray-address") and "no Ray head answers there" in err[-1]
