"""The app bundle (FAB) `flwr run` sends to the SuperLink and every node: the app's code, whole,
and nothing else. No benchmark runner, test, command line, doc, node state, key, data, catalog or
result travels, wherever in the app directory it lies."""

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from cli.app import APP_PACKAGES

ROOT = Path(__file__).resolve().parents[1]
PLANTED = [
    # the layout the README once suggested: node state, keys and data inside the app directory
    "edge/state-0/privacy-node-0.json", "edge/state-0/privacy-policy.json", "edge/state-0/messages-3.jsonl",
    "edge/creds/ca.crt", "edge/creds/node-0.key", "edge/creds/node-0.pub", "edge/creds/superlink.key",
    "edge/data-0/interactions.csv", "edge/data-0/users.csv", "edge/catalog/catalog.json", "edge/catalog/items.csv",
    "edge/superlink/superlink.db",
    # run outputs and recorded results
    "outputs/run-1/metrics.json", "outputs/run-1/privacy_ledger.jsonl", "outputs/run-1/node-state/privacy-iid-0.json",
    "outputs/run-1/summary.md", "simulations/results/new-run.json", "simulations/results/new-run.md",
    # state kept inside a package directory: still not code
    "shared/node-state/privacy-node-1.json", "client/keys/node-1.key", "server/data/interactions.csv",
    "server/state/privacy_report.json", "client/state/messages-1.jsonl", "tests/data/ratings.json",
]  # fmt: skip


def test_the_fab_holds_the_app_packages_whole_and_nothing_else(tmp_path: Path) -> None:
    """Built as `flwr run` builds it (build_fab_from_disk on the app directory) from every file the
    repository tracks, with node state, keys, data and results planted among them."""
    app = tmp_path / "fedrec"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():  # a tracked file another change deleted is not in the tree
            (app / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, app / name)
    for name in PLANTED:
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text("{}\n" if name.endswith("json") else "secret\n")
    names = set(zipfile.ZipFile(io.BytesIO(build_fab_from_disk(app))).namelist())

    code = {n for n in names if n.endswith(".py")}
    assert names - code == {"pyproject.toml", "README.md", ".info/CONTENT"}  # no state, key, data or result
    # The ServerApp and the ClientApp import these packages only (tests/test_layers.py), and all
    # of each: a module left out fails on a node at run time, not here.
    assert {n.split("/")[0] for n in code} == set(APP_PACKAGES) == {"server", "client", "shared"}
    app_code = {n for n in tracked if n.endswith(".py") and n.split("/")[0] in APP_PACKAGES and (ROOT / n).is_file()}
    assert code == app_code
    assert not {n for n in names if n.split("/")[0] in ("simulations", "tests", "cli", "docs", "outputs", "edge")}


def test_fedrec_builds_the_app_from_a_copy_of_the_packages_not_the_checkout() -> None:
    """`flwr run DIR` walks all of DIR before filtering; from the checkout that is .venv too."""
    from cli.app import app_dir

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    app_code = {n for n in tracked if n.endswith(".py") and n.split("/")[0] in APP_PACKAGES and (ROOT / n).is_file()}
    with app_dir() as app:
        assert sorted(p.name for p in app.iterdir()) == sorted(["README.md", "pyproject.toml", *APP_PACKAGES])
        assert (app / "README.md").read_text() == (ROOT / "README.md").read_text()
        names = set(zipfile.ZipFile(io.BytesIO(build_fab_from_disk(app))).namelist())
    assert {n for n in names if n.endswith(".py")} == app_code
    assert {"pyproject.toml", "README.md"} <= names
