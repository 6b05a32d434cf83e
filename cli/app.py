"""Where the Flower app is, in a source checkout and in an installed wheel.

`flwr run DIR` builds the app bundle (FAB) from DIR: its pyproject.toml (the app manifest: the
components, the run-config defaults, `fab-include`) and the code that manifest includes. In a
source checkout (an editable install too) DIR is the repository, so `flwr run .` keeps working
there. A wheel holds no repository: it ships the manifest as package data (`cli/flwr_app/
pyproject.toml`, put there by `[tool.hatch.build.targets.wheel.force-include]`) beside the
packages themselves, and DIR is assembled from those in a temporary directory.
"""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata, resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from shared.errors import FedrecError

# The packages the ServerApp and the ClientApp import: what the manifest's fab-include names.
APP_PACKAGES = ("server", "client", "shared")
PACKAGED_MANIFEST = ("flwr_app", "pyproject.toml")  # under the `cli` package, in a wheel only
CHECKOUT = Path(__file__).resolve().parents[1]  # the repository, when this file lies in one


def manifest() -> Traversable:
    """The app's pyproject.toml: the one packaged in a wheel, else the source checkout's."""
    packaged = resources.files("cli").joinpath(*PACKAGED_MANIFEST)
    if packaged.is_file():
        return packaged
    checkout = CHECKOUT / "pyproject.toml"
    if checkout.is_file():
        return checkout
    raise FedrecError(f"the Flower app's manifest is missing: neither {'/'.join(('cli', *PACKAGED_MANIFEST))} "
                      f"(an installed wheel) nor {checkout} (a source checkout) exists; reinstall fedrec")  # fmt: skip


def app_defaults() -> dict[str, Any]:
    """The run-config defaults the app ships with ([tool.flwr.app.config])."""
    with manifest().open("rb") as f:
        return dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])


@contextmanager
def app_dir() -> Iterator[Path]:
    """A directory `flwr run` builds the app from, for the duration of the block."""
    if not resources.files("cli").joinpath(*PACKAGED_MANIFEST).is_file():
        yield manifest().parent  # type: ignore[attr-defined]  # a checkout's Path
        return
    with tempfile.TemporaryDirectory(prefix="fedrec-app-") as tmp:
        root = Path(tmp)
        (root / "pyproject.toml").write_bytes(manifest().read_bytes())
        # The manifest's `readme`, which fab-include carries too: a wheel keeps it as its metadata.
        (root / "README.md").write_text(metadata.metadata("fedrec").get_payload() or "fedrec\n")  # type: ignore[attr-defined]
        for package in APP_PACKAGES:
            with resources.as_file(resources.files(package)) as source:
                shutil.copytree(source, root / package, ignore=shutil.ignore_patterns("__pycache__"))
        yield root
