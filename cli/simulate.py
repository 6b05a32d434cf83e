"""`fedrec simulate`: a federated run on this machine, every partition a simulated SuperNode."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from cli.app import app_defaults, app_dir
from shared.atomic import check_writable
from shared.config import DataConfig, PartitionConfig, from_run_config
from shared.errors import FedrecError


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; values that parse as int, float or bool become those."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise FedrecError(f"--run-config expects KEY=VALUE, got '{pair}'")
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    pass
        out[key] = value
    return out


def register(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser("simulate", help="run the federation locally (flwr run + SuperLink)")
    cmd.add_argument("--run-config", nargs="*", default=[], metavar="KEY=VALUE",
                     help="override [tool.flwr.app.config] keys, e.g. num-server-rounds=5")  # fmt: skip
    cmd.add_argument("--num-supernodes", type=int, default=0,
                     help="default: the number of partitions the data gives")  # fmt: skip
    cmd.add_argument("--client-cpus", type=int, default=0,
                     help="cores per simulated client; cores / this many clients run at once "
                          "(default: Flower's 2, so one at a time on a 2-core machine)")  # fmt: skip
    cmd.add_argument("--compare", type=Path, nargs="+", default=[], metavar="JSON",
                     help="baselines' `fedrec evaluate --json` files (popularity, the pretrained model): "
                          "their test metrics are printed beside the run's, on the same users")  # fmt: skip
    cmd.add_argument("--ray-address", default="",
                     help="run the simulated clients on this existing Ray cluster (host:port of its head, "
                          "as `ray start --head` prints) instead of a Ray instance on this machine")  # fmt: skip
    cmd.set_defaults(run=run)


def side_by_side(metrics: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> str:
    """The run's two-stage test metrics beside baselines' (name -> `fedrec evaluate --json`): the
    non-consented users' when the run reports them (the baselines are then meant for them too)."""
    test = metrics.get("test_non_consented") or metrics["test"]
    who = "users who did not consent" if "test_non_consented" in metrics else "all users"
    rows = [f"| metric ({who}) | {' | '.join(baselines)} | federated model |",
            "|---|" + "---|" * (len(baselines) + 1)]  # fmt: skip
    for protocol in ("full", "sampled"):
        for m in ("hr@10", "ndcg@10"):
            mine = test.get(f"ranking-{protocol}-{m}", float("nan"))
            theirs = " | ".join(f"{_headline(b)[protocol][m]:.4f}" for b in baselines.values())
            rows.append(f"| {protocol} {m.upper()} | {theirs} | {mine:.4f} |")
    return "\n".join(rows)


def _headline(evaluated: dict[str, Any]) -> dict[str, Any]:
    """A `fedrec evaluate --json` file's two-stage block: a model's is under "ranking", a
    baseline's (popularity) is the protocols themselves."""
    return evaluated.get("ranking", evaluated)


def read_evaluation(path: Path) -> dict[str, Any]:
    """A `fedrec evaluate --json` file, read before anything starts: a missing or foreign file is
    one line now, not a traceback after the run."""
    try:
        evaluated = json.loads(path.read_text())
        for protocol in ("full", "sampled"):
            for m in ("hr@10", "ndcg@10"):
                float(_headline(evaluated)[protocol][m])
    except OSError:
        raise FedrecError(f"--compare {path}: no such file (write it with fedrec evaluate --json)") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise FedrecError(f"--compare {path}: not a `fedrec evaluate --json` file") from None
    return evaluated


def check_run_config(config: dict[str, Any]) -> None:
    """Every key through its dataclass, before a SuperLink, Flower or Ray starts: a bad value is
    one line naming the key, not a ServerApp error minutes later."""
    from shared import config as configs

    for cls in (configs.DataConfig, configs.PartitionConfig, configs.ModelConfig, configs.TrainConfig,
                configs.PrivacyConfig, configs.FederationConfig, configs.FaultConfig, configs.SecureAggregationConfig,
                configs.AuditConfig):  # fmt: skip
        from_run_config(cls, config)


def private_mode(overrides: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """One client per user defaults to user-level central DP: DP-FedAvg through SecAgg+, so the
    server sees only the sum of clipped updates before it adds the noise. Local DP-SGD on one
    user's examples protects an example, not the user (docs/privacy.md); `dp=true` still asks
    for it explicitly."""
    asked = {"dp", "central-dp"} & set(overrides)
    if config.get("partitioning") != "user" or asked or not config.get("dp"):
        return {}
    print("one client per user: user-level central DP (DP-FedAvg) through SecAgg+, the default private "
          "mode here; pass dp=true for local example-level DP-SGD")  # fmt: skip
    return {"dp": False, "central-dp": True, "secure-aggregation": True}


def check_ray_address(address: str) -> None:
    """A Ray head that does not answer is one line now, not a simulation that hangs in ray.init."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            return
    except (OSError, ValueError) as err:
        raise FedrecError(f"--ray-address {address}: no Ray head answers there ({err}); start one with "
                          "`ray start --head` and pass the address it prints") from None


def run(args: argparse.Namespace) -> int:
    from shared.data.dataset import load_dataset
    from shared.data.partition import partition_users
    from cli.local.superlink import flwr_run, local_superlink

    if args.client_cpus < 0:
        raise FedrecError(f"--client-cpus must be >= 0, got {args.client_cpus}")
    if args.ray_address:
        check_ray_address(args.ray_address)
    baselines = {path.stem: read_evaluation(path) for path in args.compare}
    overrides = parse_overrides(args.run_config)
    unknown = sorted(set(overrides) - set(app_defaults()))
    if unknown:
        raise FedrecError(f"--run-config: unknown key '{unknown[0]}' (see [tool.flwr.app.config])")
    overrides = {**private_mode(overrides, {**app_defaults(), **overrides}), **overrides}
    config = {**app_defaults(), **overrides}
    check_run_config(config)
    check_writable(Path(str(config["output-dir"])).resolve(), "output-dir")
    nodes = args.num_supernodes
    if not nodes:  # also fetches the dataset once, before dozens of clients race for it
        dataset = load_dataset(from_run_config(DataConfig, config))
        nodes = partition_users(dataset, from_run_config(PartitionConfig, config)).num_partitions
    output_dir = Path(str(config["output-dir"])).resolve()
    overrides["output-dir"] = str(output_dir)
    overrides.setdefault("population", nodes)  # central DP's N: the federation this run simulates
    before = set(output_dir.glob("run-*"))
    with tempfile.TemporaryDirectory(prefix="fedrec-flwr-") as home, app_dir() as app:
        with local_superlink(Path(home), ray_address=args.ray_address) as env:
            errors: list[str] = []
            code = flwr_run(app, env, nodes, overrides, client_cpus=args.client_cpus, errors=errors)
    if config["resume-from"]:  # a resumed run continues in the directory it resumes from
        runs = [Path(str(config["resume-from"])).resolve().parent]
    else:
        runs = sorted(set(output_dir.glob("run-*")) - before, key=lambda p: p.stat().st_mtime)
    if code != 0 or not runs or not (runs[-1] / "summary.md").exists():
        if errors:  # the ServerApp's own words, not flwr's exit status (0 even then)
            raise FedrecError(f"the federated run failed: {errors[-1]}")
        raise FedrecError(f"the federated run failed (flwr run exited {code}); see the log above")
    print((runs[-1] / "summary.md").read_text())
    metrics = json.loads((runs[-1] / "metrics.json").read_text())
    if baselines:
        print(side_by_side(metrics, baselines))
    print(f"results: {runs[-1]}")
    stopped = metrics.get("stopped")
    if stopped:  # e.g. every client's privacy budget was already spent
        raise FedrecError(f"the run stopped before its last round: {stopped}")
    return 0
