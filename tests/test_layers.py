"""The layers import only what lies below them, and an installed fedrec finds its Flower app.

shared/ is the ground floor; client/ and server/ stand on it side by side (the Flower app is these
three, all a FAB carries); cli/ is the top layer and drives them all; simulations/ (benchmark
runners) may import anything, and nothing imports it. An import inside a function counts too.
"""

import ast
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

ROOT = Path(__file__).resolve().parents[1]
# layer -> the top-level packages it must never import
FORBIDDEN = {
    "shared": {"server", "client", "simulations", "cli"},
    "client": {"server", "simulations", "cli"},
    "server": {"client", "simulations", "cli"},
    "cli": {"simulations"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """Every absolute import in the file, wherever it stands: (top-level package, line)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    sources = sorted((ROOT / layer).rglob("*.py"))
    assert sources, f"no sources under {layer}/"
    arrows = [f"{path.relative_to(ROOT)}:{line} imports {package}"
              for path in sources for package, line in sorted(imported_packages(path))
              if package in FORBIDDEN[layer]]  # fmt: skip
    assert arrows == []


def test_the_layer_scan_sees_an_import_hidden_inside_a_function(tmp_path: Path) -> None:
    hidden = tmp_path / "hidden.py"
    hidden.write_text("import os\n\ndef run():\n    from server.app import app\n    import client.data\n")
    assert imported_packages(hidden) == {("os", 1), ("server", 4), ("client", 5)}


def test_an_installed_wheel_finds_its_flower_app_without_the_source_checkout(tmp_path: Path) -> None:
    """A wheel's layout: the packages and, as package data where the build puts it, the app's
    manifest; no repository around them. `fedrec simulate` builds the same app from there."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    site = tmp_path / "site-packages"
    for package in ("cli", "server", "client", "shared"):
        shutil.copytree(ROOT / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    forced = project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    (site / forced["pyproject.toml"]).parent.mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", site / forced["pyproject.toml"])
    # A fresh interpreter, so `cli` is the copy in `site`; it leaves the app it assembled in `built`.
    probe = (
        "import json, shutil, sys\n"
        "import cli.app\n"
        "with cli.app.app_dir() as app:\n"
        "    shutil.copytree(app, sys.argv[1])\n"
        "print(json.dumps({'cli': cli.__file__, 'manifest': str(cli.app.manifest()), 'defaults': cli.app.app_defaults()}))\n"
    )  # fmt: skip
    built = tmp_path / "app"
    done = subprocess.run([sys.executable, "-c", probe, str(built)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(site)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(found["cli"]).is_relative_to(site) and Path(found["manifest"]).is_relative_to(site)
    assert found["defaults"] == project["tool"]["flwr"]["app"]["config"]
    names = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(built))).namelist()
    code = {n for n in names if n.endswith(".py")}
    assert {"server/app.py", "client/app.py", "shared/config.py"} <= code
    assert {n.split("/")[0] for n in code} == {"server", "client", "shared"}
    assert {"pyproject.toml", "README.md"} <= set(names)


def test_cli_main_stays_the_function_after_the_commands_load() -> None:
    """`from cli import main` in one test after another's call: a submodule named like the
    function would have replaced it on the package."""
    import cli

    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert callable(cli.main) and cli.main.__module__ == "cli"
