"""`fedrec serve` under load: wrk against the running service on loopback, as a user would.

    python -m simulations.serve_load --checkpoint DIR [--duration 15] [--connections 1,8,32]
                                     [--repeats 3] [--big-catalog 1000000]

Needs wrk (Debian: apt-get install -y wrk). For each catalog the service is started as its own
process and asked until it is ready, then wrk (one thread) keeps 1, 8 and 32 connections busy
for --duration seconds each after a short warm-up, --repeats times in a row (the median is
reported: the machine is shared), each request a different one from a list:

- ML-1M, `fedrec serve --checkpoint DIR --dataset movielens-1m`: /recommend?user=ID&k=10 over
  random users (their states computed at start, see shared.serving.service), and
  /search?q=TITLE&k=10 over random titles;
- a synthetic catalog of --big-catalog items (simulations.serving's random unit text
  embeddings; untrained weights do the same work per request), served by the same
  shared.serving code without a dataset: /recommend?history=ids&k=10 with random histories of
  real users' lengths, which the service encodes per request.

wrk's own percentiles (its Lua `done` hook) give p50/p99 latency, and requests/s the throughput;
answers other than 200 are counted. /health's pass counts give the mean /recommend batch (the
requests one model pass answered, see shared.serving.batching), and the load average is noted
with each run. Writes simulations/results/serve_load.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from simulations.provenance import provenance, provenance_lines, write_results

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
GOAL_P50_MS, GOAL_P99_MS = 20.0, 50.0  # ML-1M, 8 connections (issue #28)
PATHS = 2000  # distinct requests per scenario, cycled through
DONE_LUA = """
done = function(summary, latency, requests)
  io.write(string.format('WRK_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\\n', summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, proc: subprocess.Popen, timeout: float, users: bool) -> dict:
    """/health once it answers and, where the service has users, once all their states are in."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as reply:
                health = json.loads(reply.read())
            if not users or health["users_ready"] == health["users"]:
                return health
        except OSError:
            pass
        time.sleep(1.0)
    raise SystemExit(f"the service was not ready in {timeout:.0f} s")


def lua_script(paths: list[str], directory: Path) -> Path:
    """A wrk script cycling through `paths`, and reporting wrk's exact percentiles as JSON."""
    listed = ",\n".join(json.dumps(p) for p in paths)
    script = directory / f"paths-{len(paths)}-{abs(hash(paths[0]))}.lua"
    script.write_text(f"local paths = {{\n{listed}\n}}\nlocal i = 0\n"
                      "request = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n"
                      + DONE_LUA)  # fmt: skip
    return script


def run_wrk(base: str, script: Path, connections: int, seconds: int) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), base],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    return {"connections": connections, "seconds": raw["duration_us"] / 1e6, "requests": raw["requests"],
            "rps": raw["requests"] / (raw["duration_us"] / 1e6), "non2xx": raw["non2xx"], "errors": raw["errors"],
            **{f"{k}_ms": raw[f"{k}_us"] / 1000 for k in ("p50", "p90", "p99", "max")}}  # fmt: skip


def cpu_seconds(pid: int) -> float | None:
    """The process's user + system CPU time (Linux /proc), None elsewhere: CPU per request
    depends less on what else the machine runs than latency does."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batches(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/health", timeout=30) as reply:
        return json.loads(reply.read())["recommend_batches"]


def measure(name: str, base: str, pid: int, paths: list[str], levels: list[int], seconds: int, repeats: int,
            tmp: Path) -> list[dict]:  # fmt: skip
    script = lua_script(paths, tmp)
    run_wrk(base, script, 1, 3)  # warm-up: allocator, thread pool, caches
    rows = []
    for connections in levels:
        for repeat in range(repeats):
            before, cpu_before = batches(base), cpu_seconds(pid)
            row = {"scenario": name, "repeat": repeat, **run_wrk(base, script, connections, seconds)}
            after, cpu_after = batches(base), cpu_seconds(pid)
            row["cpu_ms_per_request"] = (None if cpu_before is None or cpu_after is None or not row["requests"]
                                         else 1000 * (cpu_after - cpu_before) / row["requests"])  # fmt: skip
            passes = after["passes"] - before["passes"]
            row["mean_batch"] = (after["requests"] - before["requests"]) / passes if passes else None
            row["load1"] = os.getloadavg()[0]
            print(f"serve_load: {name}, {connections} connections: p50 {row['p50_ms']:.1f} ms, "
                  f"p99 {row['p99_ms']:.1f} ms, {row['rps']:.0f} req/s, non-2xx {row['non2xx']}, "
                  f"batch {_batch(row['mean_batch'])}, CPU {_batch(row['cpu_ms_per_request'])} ms/request, "
                  f"load {row['load1']:.1f}", flush=True)  # fmt: skip
            rows.append(row)
    return rows


def medians(rows: list[dict]) -> list[dict]:
    """One row per scenario and connection count: the median of its repeats, with their range."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["connections"]), []).append(row)
    out = []
    for (scenario, connections), runs in groups.items():
        med = {k: statistics.median(r[k] for r in runs)
               for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "load1")}  # fmt: skip
        batch = [r["mean_batch"] for r in runs if r["mean_batch"] is not None]
        cpu = [r["cpu_ms_per_request"] for r in runs if r["cpu_ms_per_request"] is not None]
        out.append({"scenario": scenario, "connections": connections, "repeats": len(runs), **med,
                    "requests": sum(r["requests"] for r in runs), "non2xx": sum(r["non2xx"] for r in runs),
                    "mean_batch": statistics.median(batch) if batch else None,
                    "cpu_ms_per_request": statistics.median(cpu) if cpu else None,
                    "p50_range": (min(r["p50_ms"] for r in runs), max(r["p50_ms"] for r in runs)),
                    "p99_range": (min(r["p99_ms"] for r in runs), max(r["p99_ms"] for r in runs))})  # fmt: skip
    return out


def start(argv: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ml1m_paths(rng: np.random.Generator) -> tuple[list[str], list[str], list[int]]:
    """Random /recommend?user= and /search?q= requests, and real users' history lengths."""
    from urllib.parse import quote

    from shared.config import DataConfig
    from shared.data.dataset import load_dataset
    from shared.models.item_names import _YEAR

    dataset = load_dataset(DataConfig(dataset="movielens-1m"))
    users = rng.choice(dataset.num_users, size=min(PATHS, dataset.num_users), replace=False)
    recommend = [f"/recommend?user={dataset.user_ids[u]}&k=10" for u in users]
    titles = [_YEAR.sub("", t) for t in dataset.item_titles[1:]]
    search = [f"/search?q={quote(titles[i])}&k=10" for i in rng.choice(len(titles), size=PATHS)]
    lengths = [min(len(dataset.sequence(int(u))), 200) for u in users]
    return recommend, search, lengths


def serve_synthetic(items: int, port: int) -> None:
    """The synthetic catalog behind the same HTTP service `fedrec serve` runs."""
    import torch

    from cli.serve import serve
    from shared.config import ModelConfig
    from shared.serving.service import Service
    from simulations.serving import synthetic_model

    torch.set_num_threads(1)  # as `fedrec serve` by default
    torch.manual_seed(0)
    model = synthetic_model(items, ModelConfig(use_id_embedding=False))
    model.config["catalog"] = [str(i) for i in range(1, items + 1)]
    model.config["titles"] = [f"Item {i}" for i in range(1, items + 1)]
    serve(Service(model, None, search=False), "127.0.0.1", port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="an ML-1M checkpoint (fedrec train --dataset movielens-1m)")
    parser.add_argument("--duration", type=int, default=15, help="seconds per concurrency level")
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=3, help="runs per level; the median is reported")
    parser.add_argument("--big-catalog", type=int, default=1_000_000, help="0: ML-1M only")
    parser.add_argument("--serve-synthetic", type=int, default=0, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.serve_synthetic:
        serve_synthetic(args.serve_synthetic, args.port)
        return 0
    if args.repeats < 1:
        print(f"serve_load: --repeats must be at least 1, got {args.repeats}", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    if args.checkpoint is None:
        raise SystemExit("--checkpoint: an ML-1M checkpoint is needed")
    levels = [int(c) for c in args.connections.split(",")]
    rng = np.random.default_rng(0)
    recommend, search, lengths = ml1m_paths(rng)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rows, startup = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        began = time.perf_counter()
        proc = start([sys.executable, "-m", "cli", "serve", "--checkpoint", str(args.checkpoint),
                      "--dataset", "movielens-1m", "--port", str(port)], env)  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            health = wait_ready(base, proc, 1800, users=True)
            startup["movielens-1m"] = time.perf_counter() - began
            for name, paths in (("ML-1M /recommend?user", recommend), ("ML-1M /search?q", search)):
                rows += measure(name, base, proc.pid, paths, levels, args.duration, args.repeats, Path(tmp))
        finally:
            stop(proc)
        if args.big_catalog:
            port = free_port()
            began = time.perf_counter()
            proc = start([sys.executable, "-m", "simulations.serve_load", "--serve-synthetic", str(args.big_catalog),
                          "--port", str(port)], env)  # fmt: skip
            try:
                base = f"http://127.0.0.1:{port}"
                wait_ready(base, proc, 1800, users=False)
                startup["synthetic"] = time.perf_counter() - began
                histories = [",".join(map(str, rng.integers(1, args.big_catalog + 1, n))) for n in lengths]
                paths = [f"/recommend?history={h}&k=10" for h in histories]
                rows += measure(f"synthetic {args.big_catalog:,} /recommend?history", base, proc.pid, paths, levels,
                                args.duration, args.repeats, Path(tmp))  # fmt: skip
            finally:
                stop(proc)
    report = {"provenance": provenance(), "duration_s": args.duration, "repeats": args.repeats,
              "catalog_items": health["items"], "startup_seconds": startup,
              "goal": {"p50_ms": GOAL_P50_MS, "p99_ms": GOAL_P99_MS}, "medians": medians(rows), "rows": rows}  # fmt: skip
    write_results(args.out, "serve_load", report, markdown(report))
    return 0


def _span(low_high: tuple[float, float]) -> str:
    return f"{low_high[0]:.1f}-{low_high[1]:.1f}"


def _batch(mean: float | None) -> str:
    return "-" if mean is None else f"{mean:.1f}"


def markdown(report: dict) -> str:
    p, rows = report["provenance"], report["medians"]
    goal = next((r for r in rows if r["scenario"] == "ML-1M /recommend?user" and r["connections"] == 8), None)
    met = goal is not None and goal["p50_ms"] <= GOAL_P50_MS and goal["p99_ms"] <= GOAL_P99_MS
    verdict = "n/a" if goal is None else (
        f"median p50 {goal['p50_ms']:.1f} ms, p99 {goal['p99_ms']:.1f} ms over {goal['repeats']} runs: "
        f"{'met' if met else 'not met'}")
    return "\n".join([
        "# fedrec serve under load: wrk on loopback", "",
        *provenance_lines(p), "",
        f"`fedrec serve` as its own process, wrk (1 thread) keeping N connections busy for {report['duration_s']} s "
        f"per run after a warm-up, {report['repeats']} runs per level in a row, each request a different one "
        "(random users, titles or histories). Each row is the median of its runs (p50 and p99 ranges over them "
        "beside it). The service runs torch on 1 thread (`--threads`, default 1); concurrent /recommend requests "
        "share model passes (`batch`: requests per pass). wrk, the service and other engineers' work share the "
        "machine's 2 cores (`load`: the 1-minute load average after each run); `CPU`, the service process's CPU "
        "time per request, depends less on that load than the latencies do.", "",
        "| scenario | connections | req/s | p50 ms | p50 range | p90 ms | p99 ms | p99 range | batch | CPU ms/req "
        "| load | non-2xx |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['scenario']} | {r['connections']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {_span(r['p50_range'])} | "
          f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {_span(r['p99_range'])} | {_batch(r['mean_batch'])} | "
          f"{_batch(r['cpu_ms_per_request'])} | "
          f"{r['load1']:.1f} | {r['non2xx']} |" for r in rows], "",
        f"Goal (ML-1M /recommend, 8 connections: p50 at most {GOAL_P50_MS:.0f} ms, p99 at most {GOAL_P99_MS:.0f} ms): "
        f"{verdict}.", "",
        "Start-up until ready (model, dataset, MiniLM, every ML-1M user's state): "
        + ", ".join(f"{k} {v:.0f} s" for k, v in report["startup_seconds"].items()) + ".", "",
    ]) + "\n"  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
