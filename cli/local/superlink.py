"""A private, short-lived simulation SuperLink for `flwr run`, and the run itself.

Two traps of Flower 1.42's own local SuperLink are avoided here:
- it installs the app's dependencies with `uv sync` into a fresh environment for every run (uv
  ignores the local CPU torch and downloads GBs of CUDA wheels): ours is started with
  `--disable-runtime-dependency-installation`, so runs use this environment;
- `flwr run` reuses whatever listens on 127.0.0.1:39091, even a stale SuperLink from another
  environment: ours listens on free ports in a private FLWR_HOME, and `flwr run` is pointed at
  it through Flower's FLWR_LOCAL_* port variables, so nothing else is ever reused.
The SuperLink and everything it started (SuperExec, the simulation, Ray) are stopped when the
block exits, even on error or SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil

from shared.deploy.process import BIN, flower_env
from shared.errors import FedrecError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def local_superlink(home: Path, startup_timeout: float = 60.0, ray_address: str = "") -> Iterator[dict[str, str]]:
    """Yield the environment under which `flwr run .` talks to this SuperLink only. With
    `ray_address` the simulation it runs joins that Ray cluster instead of starting one: Flower's
    Ray backend calls `ray.init()` with no address, which connects to RAY_ADDRESS (Flower 1.42's
    backend configuration has no address key of its own)."""
    home.mkdir(parents=True, exist_ok=True)
    http_port, control_port, fleet_port = free_port(), free_port(), free_port()
    env = {
        **flower_env(),
        **({"RAY_ADDRESS": ray_address} if ray_address else {}),
        "FLWR_HOME": str(home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }
    cmd = [
        str(BIN / "flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
        "--disable-runtime-dependency-installation",
        "--host", "127.0.0.1", "--port", str(http_port),
        "--control-api-address", f"127.0.0.1:{control_port}",
        "--fleet-api-address", f"127.0.0.1:{fleet_port}",
        "--database", str(home / "state.db"),
    ]  # fmt: skip
    log_path = home / "superlink.log"
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    # SIGTERM (a timeout, a CI runner) would end Python without running `finally`, orphaning the
    # SuperLink (it runs in its own session); turn it into SystemExit so the cleanup runs.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        deadline = time.monotonic() + startup_timeout
        while not listening(http_port):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = log_path.read_text()
                kept = Path(tempfile.gettempdir()) / f"fedrec-superlink-{http_port}.log"
                kept.write_text(text)  # the FLWR_HOME is temporary; keep the evidence
                errors = [ln for ln in text.splitlines() if "ERROR" in ln or "Error" in ln]
                reason = errors[0] if errors else (text.strip().splitlines() or ["no log"])[-1]
                raise FedrecError(f"the simulation SuperLink did not start: {reason.strip()} (log: {kept})")
            time.sleep(0.3)
        log.info("simulation SuperLink on 127.0.0.1:%d (log: %s)", http_port, log_path)
        yield env
    finally:
        _stop(proc)
        signal.signal(signal.SIGTERM, previous)


def _stop(proc: subprocess.Popen) -> None:
    """Stop the SuperLink and every process below it. SuperExec runs in a session of its own
    and starts the simulation (and Ray) there, so signalling the SuperLink's process group
    alone left an interrupted run's simulation training on, orphaned."""
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for signal_, wait in ((psutil.Process.terminate, 10), (psutil.Process.kill, 5)):
        for p in tree:
            with suppress(psutil.NoSuchProcess):
                signal_(p)
        _, tree = psutil.wait_procs(tree, timeout=wait)
        if not tree:
            break
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1)  # reap it, so Popen does not warn that it still runs


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def flwr_run(
    app_dir: Path, env: Mapping[str, str], num_supernodes: int, run_config: Mapping[str, Any],
    timeout: float | None = None, client_cpus: int = 0, errors: list[str] | None = None,
) -> int:  # fmt: skip
    """`flwr run APP --stream` against the SuperLink whose environment is `env`. `client_cpus`
    (0: Flower's default, 2) is each simulated ClientApp's share of the cores: the number of
    ClientApps running at once is the cores divided by it."""
    overrides = " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())
    federation = f"num-supernodes={num_supernodes}" + (f" client-resources-num-cpus={client_cpus}" if client_cpus else "")
    cmd = [str(BIN / "flwr"), "run", str(app_dir), "--stream", "--federation-config", federation]
    if overrides:
        cmd += ["--run-config", overrides]
    log.info("%s", " ".join(cmd))
    code, error = run_streamed(cmd, env, timeout)
    if errors is not None and error:
        errors.append(error)  # the ServerApp's own reason, for the caller's last line
    return code


SERVER_ERROR = "fedrec: error:"  # how the ServerApp logs the error that ends it (server/app.py)


def run_streamed(cmd: list[str], env: Mapping[str, str], timeout: float | None = None) -> tuple[int, str]:
    """Run `cmd`, passing its output through as it comes, and return its exit status and the
    last line in which the ServerApp stated its own error ('' if none): `flwr run --stream`
    exits 0 even when the ServerApp it streams failed."""
    last_error = ""
    deadline = None if timeout is None else time.monotonic() + timeout
    with subprocess.Popen(cmd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:  # fmt: skip
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                if SERVER_ERROR in line:
                    last_error = line.split(SERVER_ERROR, 1)[1].strip()
                if deadline is not None and time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(cmd, timeout or 0)
        except BaseException:
            # A timeout, SIGTERM or Ctrl-C: stop `flwr run` now. Leaving the block waits for it,
            # and it waits for its run to end, which after a crashed ServerApp takes Flower a
            # lapsed heartbeat (about 40 s) to notice.
            proc.kill()
            raise
        sys.stdout.flush()
    return proc.returncode, last_error
