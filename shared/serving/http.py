"""The HTTP face of `Service`: FastAPI routes, JSON answers, 4xx for bad input.

    GET /health
    GET /recommend?user=ID&k=10            or  ?history=item,item,...
    GET /search?q=QUERY[&user=ID | &history=...]&k=10
    GET /explain?user=ID&k=5&top=3         or  ?history=...

FastAPI on uvicorn: a maintained, typed ASGI stack whose query validation gives bad input a 4xx
without code of ours. /recommend, the hot path, is micro-batched (shared.serving.batching): the
requests that arrive together share one model pass, run in a thread of its own. The other
routes are plain `def`s, so uvicorn runs each in its thread pool and a slow request (an
explanation, a search) does not stall the event loop that accepts the others. Every error is
`{"error": "one line"}`: 400 for bad input, 404 for an unknown user or path, 405 for a method
other than GET.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from shared.errors import FedrecError
from shared.serving.batching import MicroBatcher
from shared.serving.service import Service, UnknownUser


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(service: Service) -> FastAPI:
    recommender = MicroBatcher(service.recommend_many)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        recommender.close()

    app = FastAPI(title="fedrec", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.exception_handler(UnknownUser)
    def unknown_user(_: Request, err: UnknownUser) -> JSONResponse:
        return _error(404, str(err))

    @app.exception_handler(FedrecError)
    def bad_input(_: Request, err: FedrecError) -> JSONResponse:
        return _error(400, str(err))

    @app.exception_handler(RequestValidationError)
    def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error(400, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail))

    @app.get("/health")
    def health() -> JSONResponse:
        # The mean /recommend batch so far says how much the micro-batching shares.
        batches = {"passes": recommender.passes, "requests": recommender.answered}
        return JSONResponse({**service.health(), "recommend_batches": batches})

    @app.get("/recommend")
    async def recommend(user: str | None = None, history: str | None = None, k: int = 10) -> JSONResponse:
        return JSONResponse(await recommender.submit((user, history, k)))

    @app.get("/search")
    def search(q: str, user: str | None = None, history: str | None = None, k: int = 10) -> JSONResponse:
        return JSONResponse(service.search(q, user, history, k))

    @app.get("/explain")
    def explain(user: str | None = None, history: str | None = None, k: int = 5, top: int = 3) -> JSONResponse:
        return JSONResponse(service.explain(user, history, k, top))

    return app
