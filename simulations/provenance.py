"""Where a recorded number came from: the command, the commit and the machine."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()  # fmt: skip
        # The records under simulations/results/ are what runs write, not code they run: a grid
        # that has written its first rows is not running changed code.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)simulations/results"], capture_output=True, text=True).stdout.strip()  # fmt: skip
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        import torch

        threads: int | None = torch.get_num_threads()
        # The accelerator a run may have used, so a GPU row says which one.
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        threads, gpu = None, None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_gib, 1),
            "torch_threads": threads, "python": platform.python_version(), "gpu": gpu}  # fmt: skip


def command() -> str:
    """The command line as typed: `python -m simulations.x ...` for a module run with -m."""
    script = Path(sys.argv[0])
    root = Path(__file__).resolve().parent.parent
    if script.suffix == ".py" and script.resolve().is_relative_to(root):
        module = ".".join(script.resolve().relative_to(root).with_suffix("").parts)
        return " ".join(["python", "-m", module, *sys.argv[1:]])
    return " ".join(sys.argv)


def provenance() -> dict[str, Any]:
    return {
        "command": command(),
        "commit": git_commit(),
        "machine": machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def provenance_lines(p: dict[str, Any]) -> list[str]:
    """The Markdown lines every results page opens with."""
    return [f"Command: `{p['command']}`  ", f"Commit: `{p['commit']}`  ", f"Machine: {p['machine']}  "]


def write_results(out: Path, name: str, report: dict[str, Any], markdown: str, *, quiet: bool = False) -> None:
    """`name`.json for machines, `name`.md and `name`.png (simulations/charts.py) for people, each
    written atomically; the Markdown printed unless `quiet`."""
    from shared.atomic import write_json, write_text
    from simulations.charts import draw

    write_json(out / f"{name}.json", report)
    write_text(out / f"{name}.md", markdown)
    draw(name, report, out)
    if not quiet:
        print(markdown)
