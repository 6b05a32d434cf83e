"""A whole deployment on loopback: SuperLink + SuperNodes as separate processes, TLS, node auth.

What the README's "Edge deployment" section does by hand, as one context manager, for the
integration test and the edge-footprint benchmark:

    with LocalDeployment(work, node_data=[dir0, dir1, dir2], catalog=["--catalog", catalog_dir]) as dep:
        dep.flwr_run({"num-server-rounds": 2, ...})

Every process is started through `fedrec deploy ...` (so its checks run too) in its own session,
and every one of them is stopped when the block exits, whatever happened inside it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from shared.deploy.process import BIN, flower_env
from shared.errors import FedrecError
from simulations.superlink import free_port, listening, toml_value

CONNECTION = "fedrec-edge"


class LocalDeployment:
    def __init__(self, work: Path, node_data: list[Path], catalog: list[str], env: dict[str, str] | None = None,
                 extra_keys: int = 1) -> None:  # fmt: skip
        self.work, self.node_data, self.catalog = work, node_data, catalog
        self.port = free_port()
        self.creds = work / "credentials"
        self.env = {**flower_env(), **(env or {}), "FLWR_HOME": str(work / "flwr-home")}
        self.extra_keys = extra_keys  # key pairs made but never registered (to test refusal)
        self.procs: list[subprocess.Popen] = []  # everything started, stopped by close()
        self.nodes: dict[int, subprocess.Popen] = {}

    def _fedrec(self, *args: str, log: str) -> subprocess.Popen:
        with open(self.work / log, "w") as out:
            proc = subprocess.Popen([str(BIN / "fedrec"), *args], env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    def _check(self, *args: str) -> None:
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise FedrecError(f"{' '.join(args[:3])} failed: {(done.stderr or done.stdout).strip()[-400:]}")

    def __enter__(self) -> LocalDeployment:
        try:
            self._check(str(BIN / "fedrec"), "deploy", "credentials", "--out", str(self.creds),
                        "--nodes", str(len(self.node_data) + self.extra_keys), "--host", "127.0.0.1")  # fmt: skip
            self._fedrec("deploy", "superlink", "--credentials", str(self.creds), "--state-dir",
                         str(self.work / "superlink"), "--host", "127.0.0.1", "--port", str(self.port),
                         log="superlink.log")  # fmt: skip
            deadline = time.monotonic() + 60
            while not listening(self.port):
                if time.monotonic() > deadline or self.procs[0].poll() is not None:
                    raise FedrecError(f"the SuperLink did not start (log: {self.work / 'superlink.log'})")
                time.sleep(0.3)
            self._check(str(BIN / "fedrec"), "deploy", "connection", "--name", CONNECTION, "--address",
                        f"127.0.0.1:{self.port}", "--ca", str(self.creds / "ca.crt"))  # fmt: skip
            for k in range(len(self.node_data)):
                self._check(str(BIN / "flwr"), "supernode", "register", str(self.creds / f"node-{k}.pub"), CONNECTION)
                self.start_node(k)
            for k in range(len(self.node_data)):
                self.wait_connected(k)
        except BaseException:
            self.close()
            raise
        return self

    def start_node(self, k: int, data: Path | None = None) -> subprocess.Popen:
        """SuperNode `k` with key node-k (registered for k < len(node_data)) on `data`."""
        self.nodes[k] = self._fedrec(
            "deploy", "supernode", "--superlink", f"127.0.0.1:{self.port}",
            "--data-path", str(data or self.node_data[k]), "--state-dir", str(self.state_dir(k)),
            "--partition-id", str(k), "--ca", str(self.creds / "ca.crt"), "--key", str(self.creds / f"node-{k}.key"),
            "--runtime-cert", str(self.creds / f"node-{k}-tls.crt"), "--runtime-key", str(self.creds / f"node-{k}-tls.key"),
            "--clientappio-port", str(free_port()), "--wait", "30", *self.catalog, log=f"node-{k}.log",
        )  # fmt: skip
        return self.nodes[k]

    def wait_connected(self, k: int, timeout: float = 300) -> None:
        """Until node `k` has activated with the SuperLink (it first checks its data, which for
        ML-1M takes a while), so a run's first round finds every node."""
        log, deadline = self.work / f"node-{k}.log", time.monotonic() + timeout
        while "SuperNode ID:" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or self.nodes[k].poll() is not None:
                raise FedrecError(f"SuperNode {k} did not connect (log: {log})")
            time.sleep(0.5)

    def state_dir(self, k: int) -> Path:
        return self.work / f"node-{k}-state"

    def flwr_run(self, run_config: dict[str, Any], timeout: float = 900) -> int:
        overrides = " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())
        app = Path(__file__).resolve().parents[1]
        with open(self.work / "flwr-run.log", "w") as out:
            return subprocess.run([str(BIN / "flwr"), "run", str(app), CONNECTION, "--stream", "--run-config", overrides],
                                  env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode  # fmt: skip

    def close(self) -> None:
        for proc in reversed(self.procs):
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=wait)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.procs.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()
