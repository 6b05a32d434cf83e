"""fedrec serve: every endpoint asked with good and bad input (the ASGI app in this process), the
real process on loopback once (slow), and the start-up mistakes that get one line instead of a
server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from cli import main

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base: str, path: str, method: str = "GET", **params: object) -> tuple[int, dict]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def films_model(tmp_path_factory) -> tuple[Path, Path]:
    from films import train_films

    return train_films(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def service(films_model):
    """The service's ASGI app in this process (its lifespan included), asked as a client would;
    `get(path, method, **params)` -> (status, JSON body)."""
    from fastapi.testclient import TestClient

    from shared.serving.http import create_app
    from shared.serving.service import load_service

    checkpoint, data = films_model
    with TestClient(create_app(load_service(str(checkpoint), path=str(data)))) as client:

        def ask(path: str, method: str = "GET", **params: object) -> tuple[int, dict]:
            reply = client.request(method, path, params=params)
            return reply.status_code, reply.json()

        yield ask


def test_every_endpoint_answers_json(service) -> None:
    status, health = service("/health")
    assert status == 200 and health["status"] == "ok" and health["search"] is True
    assert (health["items"], health["dataset"], health["users"]) == (30, "csv", 16)
    status, recs = service("/recommend", user="3", k=4)
    assert status == 200 and len(recs["items"]) == 4 and {"item_id", "title", "score"} <= set(recs["items"][0])
    status, recs = service("/recommend", history="Star Wars (1977), Heat", k=3)
    assert status == 200 and len(recs["items"]) == 3
    assert not {"Star Wars", "Heat"} & {r["title"] for r in recs["items"]}  # seen items left out
    status, found = service("/search", q="Toy Story", k=3)
    assert status == 200 and found["items"][0]["title"] == "Toy Story" and found["items"][0]["personal_score"] is None
    status, found = service("/search", q="Toy Story", user="2", k=3)
    assert status == 200 and found["items"][0]["title"] == "Toy Story" and found["items"][0]["personal_score"] is not None
    status, why = service("/explain", user="2", k=2, top=2)
    assert status == 200 and len(why["items"]) == 2
    first = why["items"][0]
    assert len(first["history"]) <= 2 and [f["name"] for f in first["features"]][:2] == ["age", "gender"]
    assert {"item_id", "title", "score", "gap"} <= set(first)
    assert service("/recommend", method="POST", user="1")[0] == 405  # only GET is answered


@pytest.mark.parametrize("path,params,status,message", [
    ("/recommend", {}, 400, "give either user or history"),
    ("/recommend", {"user": "1", "history": "Heat"}, 400, "give either user or history"),
    ("/recommend", {"user": "999"}, 404, "unknown user id '999'"),
    ("/recommend", {"user": "1", "k": "many"}, 400, "k:"),
    ("/recommend", {"user": "1", "k": "0"}, 400, "k must be between 1"),
    ("/recommend", {"history": "Hamlet"}, 400, "could be any of"),
    ("/recommend", {"history": "Metropolis"}, 400, "unknown item 'Metropolis'"),
    ("/search", {}, 400, "q:"),
    ("/search", {"q": "  "}, 400, "the query is empty"),
    ("/search", {"q": "Heat", "user": "999"}, 404, "unknown user id"),
    ("/explain", {"user": "1", "top": "0"}, 400, "top must be at least 1"),
    ("/nowhere", {}, 404, "Not Found"),
])  # fmt: skip
def test_bad_input_gets_a_4xx_with_one_line(service, path, params, status, message) -> None:
    code, body = service(path, **params)
    assert code == status and message in body["error"] and "\n" not in body["error"]


@pytest.mark.slow
def test_the_real_process_answers_only_get_and_stops_cleanly(films_model, tmp_path) -> None:
    """`fedrec serve` as a process on loopback: up, answering, refusing a POST, and stopped by SIGTERM."""
    checkpoint, data = films_model
    base = f"http://127.0.0.1:{(port := free_port())}"
    env = {**os.environ, "FEDREC_OFFLINE": "1", "FEDREC_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--checkpoint", str(checkpoint),
                             "--path", str(data), "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if get(base, "/health")[0] == 200:
                    break
            except OSError:
                assert time.monotonic() < deadline, "the service did not start in 180 s"
                time.sleep(0.5)
        assert get(base, "/recommend", user="3", k=4)[0] == 200
        assert get(base, "/recommend", method="POST", user="1")[0] == 405
        proc.terminate()
        # uvicorn finishes the requests in flight, then re-raises SIGTERM: the status says so.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_start_up_mistakes_are_one_line(capsys, tmp_path) -> None:
    assert main(["serve", "--checkpoint", str(tmp_path / "none"), "--port", str(free_port())]) == 2
    assert "no such directory" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", "--checkpoint", str(tmp_path), "--port", str(busy.getsockname()[1])]) == 2
    assert "cannot listen there" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(tmp_path), "--port", "70000"]) == 2
    assert "--port must be between" in capsys.readouterr().err
