"""The app bundle `flwr run` sends to the SuperLink and every node carries code only: no node
state, key, data, catalog or result, wherever in the app directory they lie."""

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

ROOT = Path(__file__).resolve().parents[1]
PLANTED = [
    # the layout the README once suggested: node state, keys and data inside the app directory
    "edge/state-0/privacy-node-0.json", "edge/state-0/privacy-policy.json", "edge/state-0/messages-3.jsonl",
    "edge/creds/ca.crt", "edge/creds/node-0.key", "edge/creds/node-0.pub", "edge/creds/superlink.key",
    "edge/data-0/interactions.csv", "edge/data-0/users.csv", "edge/catalog/catalog.json", "edge/catalog/items.csv",
    "edge/superlink/superlink.db",
    # run outputs and recorded results
    "outputs/run-1/metrics.json", "outputs/run-1/privacy_ledger.jsonl", "outputs/run-1/node-state/privacy-iid-0.json",
    "simulations/results/new-run.json", "simulations/results/new-run.md",
    # state kept inside a package directory: still not code
    "shared/node-state/privacy-node-1.json", "client/keys/node-1.key", "server/data/interactions.csv",
]  # fmt: skip


def test_a_fab_built_from_a_tree_with_state_keys_and_data_holds_none_of_them(tmp_path: Path) -> None:
    app = tmp_path / "fedrec"
    tracked = subprocess.run(["git", "ls-files", "pyproject.toml", "README.md", ".gitignore", "server", "client",
                              "shared", "simulations"], cwd=ROOT, capture_output=True, text=True, check=True).stdout  # fmt: skip
    for name in tracked.split():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, app / name)
    for name in PLANTED:
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text("{}\n" if name.endswith("json") else "secret\n")
    names = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(app))).namelist()
    assert not set(PLANTED) & set(names)
    code = {n for n in names if n.endswith(".py")}
    assert set(names) - code == {"pyproject.toml", "README.md", ".info/CONTENT"}
    assert {n.split("/")[0] for n in code} <= {"server", "client", "shared", "simulations"}
    assert {"server/app.py", "client/app.py", "shared/data/public_catalog.py"} <= code
