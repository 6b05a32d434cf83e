"""Where the Flower app is, in a source checkout and in an installed wheel.

`flwr run DIR` builds the app bundle (FAB) from DIR: its pyproject.toml (the app manifest: the
components, the run-config defaults, `fab-include`) and the code that manifest includes. In a
source checkout (an editable install too) that is the repository, where `flwr run .` works by
hand. A wheel holds no repository: it ships the manifest as package data (`cli/flwr_app/
pyproject.toml`, put there by `[tool.hatch.build.targets.wheel.force-include]`) beside the
packages themselves. Either way, fedrec's own commands assemble DIR from those in a temporary
directory (app_dir).
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


def packaged_manifest() -> Traversable | None:
    """The manifest a wheel ships as package data; None in a source checkout."""
    packaged = resources.files("cli").joinpath(*PACKAGED_MANIFEST)
    return packaged if packaged.is_file() else None


def manifest() -> Traversable:
    """The app's pyproject.toml: the one packaged in a wheel, else the source checkout's."""
    if (packaged := packaged_manifest()) is not None:
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


def readme() -> str:
    """The manifest's `readme`, which fab-include carries too: a checkout's README.md, or the copy
    a wheel keeps as its metadata."""
    checkout = CHECKOUT / "README.md"
    if packaged_manifest() is None and checkout.is_file():
        return checkout.read_text()
    return metadata.metadata("fedrec").get_payload() or "fedrec\n"  # type: ignore[attr-defined]


@contextmanager
def app_dir() -> Iterator[Path]:
    """A directory `flwr run` builds the app from, for the duration of the block: the manifest, the
    README and the app's packages, copied into a temporary directory. Never the checkout itself:
    `flwr run DIR` walks every file under DIR before it filters them (56,000 here, .venv and
    outputs included: 8 s of every run), and a wheel has no checkout."""
    with tempfile.TemporaryDirectory(prefix="fedrec-app-") as tmp:
        root = Path(tmp)
        (root / "pyproject.toml").write_bytes(manifest().read_bytes())
        (root / "README.md").write_text(readme())
        for package in APP_PACKAGES:
            with resources.as_file(resources.files(package)) as source:
                shutil.copytree(source, root / package, ignore=shutil.ignore_patterns("__pycache__"))
        yield root
