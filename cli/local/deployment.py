"""A whole deployment on one machine: SuperLink + SuperNodes as separate processes, TLS, node auth.

What the README's "Edge deployment" section does by hand, as one context manager, for the
integration test and the edge-footprint benchmark:

    with LocalDeployment(work, node_data=[dir0, dir1, dir2], catalog=[cat0, cat1, cat2], netns=True) as dep:
        dep.flwr_run({"num-server-rounds": 2, "catalog-path": ..., ...})

With `netns`, the SuperLink and each node run on hosts of their own: network namespaces joined
by veth pairs (cli/local/netns.py), each node reaching the SuperLink over its own link. Without
the privilege to make them, it falls back to loopback and says so in `network`. Every process is
started through `fedrec deploy ...` (so its checks run too) in its own session, and every one of
them is stopped, and every namespace deleted, when the block exits, whatever happened inside it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cli.app import app_dir
from cli.local.netns import Topology, in_namespace
from cli.local.superlink import free_port, listening, toml_value
from shared.deploy.process import BIN, flower_env
from shared.errors import FedrecError

CONNECTION = "fedrec-edge"


class LocalDeployment:
    def __init__(self, work: Path, node_data: list[Path], catalog: Path | list[Path], env: dict[str, str] | None = None,
                 extra_keys: int = 1, netns: bool = False, server_env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.work, self.node_data = work, node_data
        # Each node's own copy of the public catalog (or one directory they all read).
        self.catalogs = catalog if isinstance(catalog, list) else [catalog] * (len(node_data) + extra_keys)
        self.port = free_port()
        self.creds = work / "credentials"
        self.env = {**flower_env(), **(env or {}), "FLWR_HOME": str(work / "flwr-home")}
        self.server_env = {**self.env, **(server_env or {})}  # the SuperLink and the ServerApp it starts
        self.extra_keys = extra_keys  # key pairs made but never registered (to test refusal)
        self.procs: list[subprocess.Popen] = []  # everything started, stopped by close()
        self.nodes: dict[int, subprocess.Popen] = {}
        self.topology = Topology(len(node_data) + extra_keys) if netns else None
        self.network = "loopback"

    def _fedrec(self, *args: str, log: str, ns: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.work / log, "w") as out:
            proc = subprocess.Popen(in_namespace(ns, [str(BIN / "fedrec"), *args]), env=env or self.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    def _check(self, *args: str) -> str:
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise FedrecError(f"{' '.join(args[:3])} failed: {(done.stderr or done.stdout).strip()[-400:]}")
        return done.stdout

    @property
    def server_ns(self) -> str | None:
        return self.topology.server if self.topology is not None else None

    def flwr(self, *args: str) -> str:
        """A `flwr` command on the server's host (it reaches the SuperLink on its loopback)."""
        return self._check(*in_namespace(self.server_ns, [str(BIN / "flwr"), *args]))

    def _superlink_up(self) -> bool:
        if self.topology is None:
            return listening(self.port)
        probe = f"import socket; socket.create_connection(('127.0.0.1', {self.port}), 1)"
        return subprocess.run(in_namespace(self.server_ns, [sys.executable, "-c", probe]), capture_output=True,
                              timeout=30).returncode == 0  # fmt: skip

    def superlink_address(self, k: int) -> str:
        return f"{self.topology.superlink_address(k) if self.topology else '127.0.0.1'}:{self.port}"

    def __enter__(self) -> LocalDeployment:
        try:
            if self.topology is not None:
                why = self.topology.make()
                if why:
                    self.topology, self.network = None, f"loopback (network namespaces unavailable: {why})"
                else:
                    self.network = "network namespaces"
            hosts = ["127.0.0.1", *(self.topology.server_addresses() if self.topology else [])]
            self._check(str(BIN / "fedrec"), "deploy", "credentials", "--out", str(self.creds),
                        "--nodes", str(len(self.node_data) + self.extra_keys),
                        *(x for h in hosts for x in ("--host", h)))  # fmt: skip
            # In its own namespace the SuperLink listens on all of that host's links (one per node).
            self._fedrec("deploy", "superlink", "--credentials", str(self.creds), "--state-dir",
                         str(self.work / "superlink"), "--host", "0.0.0.0" if self.topology else "127.0.0.1",
                         "--port", str(self.port), log="superlink.log", ns=self.server_ns, env=self.server_env)  # fmt: skip
            deadline = time.monotonic() + 60
            while not self._superlink_up():
                if time.monotonic() > deadline or self.procs[0].poll() is not None:
                    raise FedrecError(f"the SuperLink did not start (log: {self.work / 'superlink.log'})")
                time.sleep(0.3)
            # On the server's host, as `flwr` runs below: from this one, 127.0.0.1 is not the
            # SuperLink's, and the command waited out its retries and left the TLS check undone.
            self._check(*in_namespace(self.server_ns, [str(BIN / "fedrec"), "deploy", "connection", "--name", CONNECTION,
                                                       "--address", f"127.0.0.1:{self.port}", "--ca",
                                                       str(self.creds / "ca.crt")]))  # fmt: skip
            for k in range(len(self.node_data)):
                self.flwr("supernode", "register", str(self.creds / f"node-{k}.pub"), CONNECTION)
                self.start_node(k)
            for k in range(len(self.node_data)):
                self.wait_connected(k)
        except BaseException:
            self.__exit__()
            raise
        return self

    def start_node(self, k: int, data: Path | None = None, wait: float = 30.0) -> subprocess.Popen:
        """SuperNode `k` with key node-k (registered for k < len(node_data)) on `data`, on its
        own host when there are namespaces, retrying a refusing SuperLink for `wait` seconds."""
        self.nodes[k] = self._fedrec(
            "deploy", "supernode", "--superlink", self.superlink_address(k),
            "--data-path", str(data or self.node_data[k]), "--catalog", str(self.catalogs[k]),
            "--state-dir", str(self.state_dir(k)),
            "--partition-id", str(k), "--ca", str(self.creds / "ca.crt"), "--key", str(self.creds / f"node-{k}.key"),
            "--runtime-cert", str(self.creds / f"node-{k}-tls.crt"), "--runtime-key", str(self.creds / f"node-{k}-tls.key"),
            "--clientappio-port", str(free_port()), "--wait", str(wait), log=f"node-{k}.log",
            ns=self.topology.node(k) if self.topology else None,
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

    def flwr_run(self, run_config: dict[str, Any], timeout: float = 900, log: str = "flwr-run.log") -> int:
        overrides = " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())
        with app_dir() as app, open(self.work / log, "w") as out:
            cmd = [str(BIN / "flwr"), "run", str(app), CONNECTION, "--stream", "--run-config", overrides]
            return subprocess.run(in_namespace(self.server_ns, cmd), env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode  # fmt: skip

    def runs(self) -> list[dict[str, Any]]:
        """`flwr ls`: every run this SuperLink knows, with its status (e.g. finished:failed)."""
        return list(json.loads(self.flwr("ls", CONNECTION, "--format", "json"))["runs"])

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
        if self.topology is not None:
            self.topology.close()
