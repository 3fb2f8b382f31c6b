"""`create_app(recognizer)`: the REST API and the web UI in one ASGI app, served by uvicorn.

Endpoints (errors are JSON `{"error": "..."}`):

- `POST /v1/predict`, multipart field `file`: the same object as `digitrec predict --json`;
- `POST /v1/read`, multipart field `file`: the same object as `digitrec read --json`;
- `GET /healthz` (the process is up), `GET /readyz` (the model is loaded), `GET /v1/model`;
- `/docs`: OpenAPI; `/`: the Gradio UI (draw, upload or paste a digit; read a number).

Status codes: 400 bad request, 408 an upload slower than the body timeout, 413 body or image too
large, 415 not an image (or not a multipart upload), 422 an image that cannot be decoded or a missing
field, 503 overloaded (more requests in flight than the concurrency limit: answered at once, never
queued without bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors.multiprocess import Process

from .. import __version__
from ..reading.images import MAX_BYTES, ImageError
from ..reading.recognizer import Recognizer, load_recognizer

__all__ = ["ServerConfig", "create_app", "listen_socket", "serve"]

IMAGE_FIELD = "an image: PNG, JPEG, BMP, GIF, TIFF, WebP, Netpbm (PBM/PGM/PPM), AVIF, or HEIC with the heic extra"
# The request body of the upload endpoints, as OpenAPI documents it (the endpoints parse it themselves).
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary", "description": IMAGE_FIELD}},
                }
            }
        },
    }
}
UPLOAD_PATHS = ("/v1/predict", "/v1/read")  # the endpoints that take an image upload
# Paths answered by every worker; the rest (the web UI, /docs) by the UI's worker when serving with
# several workers and the UI (see `_Workers`).
API_PREFIXES = (b"/v1/", b"/healthz", b"/readyz")


# --- the API's answers, as OpenAPI documents them ---------------------------------------------------


class Prediction(BaseModel):
    file: str = Field(description="the uploaded file's name")
    digit: int | None = Field(description="the digit, or null when the image holds none")
    confidence: float = Field(description="probability of the answer (of 'not a digit' when digit is null)")
    probabilities: list[float] = Field(description="probability of each digit 0-9, given that it is a digit")
    reason: str | None = Field(None, description="why digit is null")


class DigitInLine(BaseModel):
    digit: int
    confidence: float
    box: list[int] = Field(description="x, y, width, height in image pixels")


class Reading(BaseModel):
    file: str
    text: str = Field(
        description="the digits left to right, e.g. '90210'; lines one above the other are read apart, "
        "top to bottom, separated by a newline ('90210\\n1250')"
    )
    confidence: float | None = Field(
        None, description="probability that the whole text is right (its least sure digit); null when empty"
    )
    digits: list[DigitInLine]


class Error(BaseModel):
    error: str = Field(description="what was wrong, for a person to read")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Error, "description": text}
    for code, text in {
        400: "bad request",
        408: "the upload took longer than the body timeout",
        413: "request body or image too large",
        415: "not an image, or not a multipart/form-data upload",
        422: "an image that cannot be decoded, or a missing field",
        503: "overloaded: more requests in flight than the concurrency limit; retry later",
    }.items()
}


@dataclass(frozen=True)
class ServerConfig:
    """Limits of one server process."""

    max_upload_bytes: int = MAX_BYTES  # larger request bodies get 413 before they are read
    max_concurrency: int = 64  # requests in flight on /v1/*; more get 503 at once
    body_timeout: float = 30.0  # seconds a client may take to send its whole request body; slower gets 408
    ui: bool = True  # mount the Gradio UI at /
    # Serving with several workers, the UI is in one of them: the others answer every path outside the
    # API with a redirect to the same URL on a new connection, which the supervisor deals to that one.
    ui_elsewhere: bool = False
    # Web pages from these origins (e.g. "https://forms.example.com") may call the API and the UI from
    # a browser; none by default. With the UI, Starlette's CORS middleware is installed even with no
    # origins, so that Gradio's own, which otherwise answers every preflight and allows any origin on
    # a non-localhost Host, defers to it.
    cors_origins: tuple[str, ...] = ()
    # Connections: the request head (request line and headers) may be this many bytes and headers at
    # most, and must arrive within head_timeout seconds of the connection or of its first byte; an idle
    # keep-alive connection is closed after keep_alive seconds; past max_connections open at once, new
    # ones are closed at once. Without them one 64 MB header line was buffered whole, and slowloris or
    # idle connections were held for ever until the process ran out of file descriptors.
    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    head_timeout: float = 10.0
    keep_alive: float = 5.0
    max_connections: int = 1000
    # Requests decoded, preprocessed and inferred at once, on that many threads (0: one per core).
    # More threads than cores only fight over the cores and the GIL: on 2 cores, 2 threads served 230
    # requests/s at concurrency 8 and Starlette's default of 40 threads 187 (benchmarks/serve.py).
    threads: int = 0

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_concurrency", "max_head_bytes", "max_headers", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("body_timeout", "head_timeout", "keep_alive"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name.replace('_', '-')} must be more than 0 seconds, got {getattr(self, name)}")


CONNECTION_LIMITS = ("max_head_bytes", "max_headers", "head_timeout", "keep_alive", "max_connections")


def _not_multipart(content_type: str, field: str = "file") -> str:
    """The 415 message for an upload that is not multipart/form-data."""
    return f"send the image as multipart/form-data with a field '{field}', not {content_type or 'no type'}"


def _status_for(error: ImageError) -> int:
    message = str(error)
    if "not an image" in message:
        return 415
    if "more than the limit" in message or "than the limit of" in message:
        return 413
    return 422


class _Refused(Exception):
    """A request the upload endpoints answer with an error: its status and message."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


MAX_PARTS = 16  # parts of a multipart upload; more is a bad request


def _decode_name(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def parse_upload(body: bytes | bytearray, content_type: str, field: str = "file") -> tuple[str, bytes]:
    """A whole multipart/form-data request body -> (file name, contents) of the file in ``field``.

    Every problem is a _Refused with its status: 415 not multipart, 400 malformed, 422 no such file.
    The body is already in memory (its size capped); python-multipart's parser walks it, no temporary
    files. It costs about 40 us more a 12 KB upload than the parser written here before (65-70 against
    26-27 us, benchmarks/upload_parse.py), 1-1.5% of a request's 2.5-3.8 ms: under the 10% that would
    justify a parser of our own.
    """
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise _Refused(415, _not_multipart(content_type, field))
    boundary = params.get(b"boundary")
    if not boundary:
        raise _Refused(400, "bad multipart/form-data: no boundary")
    found: list[tuple[str, bytes]] = []
    part: dict[str, Any] = {}
    parts = 0
    ended = False

    def on_part_begin() -> None:
        nonlocal parts
        parts += 1
        if parts > MAX_PARTS:
            raise _Refused(400, f"bad multipart/form-data: more than {MAX_PARTS} parts")
        part.clear()
        part.update(field=b"", value=b"", headers=[], data=[])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["value"] += data[start:end]

    def on_header_end() -> None:  # a header may come in pieces, and its value may be empty
        part["headers"].append((part["field"], part["value"]))
        part["field"] = part["value"] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part["data"].append(data[start:end])

    def on_part_end() -> None:
        name = filename = None
        for key, value in part["headers"]:
            if key.strip().lower() == b"content-disposition":
                _, options = parse_options_header(value)
                name, filename = options.get(b"name"), options.get(b"filename")
        if name is not None and _decode_name(name) == field and filename is not None:
            if found:
                raise _Refused(400, f"bad multipart/form-data: more than one file in '{field}'")
            found.append((_decode_name(filename) or "upload", b"".join(part["data"])))

    def on_end() -> None:
        nonlocal ended
        ended = True

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
        "on_end": on_end,
    }
    # A preamble before the first boundary is to be ignored (RFC 2046); the parser expects none.
    start = body.find(b"--" + boundary)
    if start < 0:
        if body.strip():
            raise _Refused(400, "bad multipart/form-data: no boundary line in the body")
        raise _Refused(422, f"invalid request: missing or bad field {field}")
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body[start:] if start else body)
        parser.finalize()
    except MultipartParseError as e:
        raise _Refused(400, f"bad multipart/form-data: {e}") from None
    if not ended:
        raise _Refused(400, "bad multipart/form-data: the body ends inside a part")
    if not found:
        raise _Refused(422, f"invalid request: missing or bad field {field}")
    return found[0]


def _answer_or_error(action: Any, data: bytes, name: str) -> tuple[int, dict[str, Any]]:
    """``action(data, name)`` on a worker thread, as (status, JSON): an image error becomes its answer
    here, in the thread. Raised across threads it sat in a reference cycle (the future that carried it,
    its traceback's frames) holding the upload's bytes until a full garbage collection: after 32
    concurrent 15 MB bad uploads the process kept about 1 GB (benchmarks/large_uploads.py)."""
    try:
        return 200, action(data, name).to_dict()
    except ImageError as e:
        return _status_for(e), {"error": str(e)}


class _Uploads:
    """The two upload endpoints' work, from a whole request body to the status and JSON of the answer.

    The server calls it as plain ASGI from `_Limits` (FastAPI's routing, dependency solving and form
    parsing cost about a tenth of a request's CPU time); the FastAPI routes, which document the
    endpoints in OpenAPI, call it too.
    """

    def __init__(self, rec: Recognizer, config: ServerConfig) -> None:
        self.config = config
        self.actions: dict[str, Any] = {"/v1/predict": rec.predict, "/v1/read": rec.read}

    async def answer(self, path: str, content_type: str, body: bytes | bytearray) -> tuple[int, dict[str, Any]]:
        action = self.actions[path]
        limit = self.config.max_upload_bytes
        try:
            name, data = parse_upload(body, content_type)
            if len(data) > limit:
                return 413, {"error": f"{name}: file over {limit} bytes"}
            # Header and pixels are read on a worker thread, never in the event loop: a file made to
            # decode slowly (the structural limits of `images.open_image` refuse the known kinds) then
            # holds one thread, not every connection (/healthz included). Images up to 512x512 used to
            # be read in the loop, a hop to a thread saved; one crafted 2 MB JPEG stalled all for 4 s.
            status, result = await anyio.to_thread.run_sync(_answer_or_error, action, data, name)
        except _Refused as e:
            return e.status, {"error": e.error}
        return status, {"file": name, **result} if status == 200 else result

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        # One growing buffer, not a list of chunks joined at the end, which held the body twice
        # (benchmarks/large_uploads.py measures the memory of many large uploads at once).
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
        try:
            status, payload = await self.answer(scope["path"], content_type, body)
        except Exception as e:  # a bug of ours: a JSON 500 like FastAPI's handler below, the traceback logged
            logging.getLogger("uvicorn.error").exception("error answering %s", scope["path"])
            status, payload = 500, {"error": f"internal error ({type(e).__name__}); please report it"}
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyCut(Exception):
    """The request body was too large or too slow; the middleware answers 413 or 408."""


class _Limits:
    """ASGI middleware: multipart uploads only (415), body size cap (413) and body deadline (408) on every
    route, and a concurrency cap on the API (503), all answered at once. Plain ASGI: the 415 check used
    to be a Starlette ``@app.middleware("http")``, which cost about 0.6 ms a request (benchmarks/serve.py
    at concurrency 1: 185.6 -> 207.6 requests/s)."""

    def __init__(self, app: Any, config: ServerConfig, uploads: _Uploads | None = None) -> None:
        self.app = app
        self.config = config
        self.uploads = uploads
        self.in_flight = 0
        self.lock = threading.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        limit = self.config.max_upload_bytes + 64 * 1024  # room for the multipart envelope
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            # The body is never read, so the connection cannot carry another request.
            response = JSONResponse({"error": f"request body over {limit} bytes"}, 413, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        if self.config.ui_elsewhere and not scope["path"].encode().startswith(API_PREFIXES):
            # 307 keeps the method and body; closing the connection makes the browser open a new one,
            # whose first request the supervisor sees and deals to the UI's worker.
            url = scope["path"] + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
            elsewhere = {"error": "served by another worker; follow Location"}
            response = JSONResponse(elsewhere, 307, headers={"Location": url, "Connection": "close"})
            await response(scope, receive, send)
            return
        if not scope["path"].startswith("/v1/"):
            # The web UI's routes (Gradio's own): the same cap and deadline on the request body (a
            # chunked body has no declared size; a 200 MB one to /gradio_api/queue/join was read whole),
            # but no concurrency slot: a browser holds its event streams open for minutes.
            await self._guarded(scope, receive, send, self.app, limit)
            return
        upload = scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS
        if upload:
            ctype = headers.get(b"content-type", b"").decode("latin-1")
            if not ctype.lower().startswith("multipart/form-data"):  # media types are case-insensitive
                await JSONResponse({"error": _not_multipart(ctype)}, 415)(scope, receive, send)
                return
        with self.lock:
            if self.in_flight >= self.config.max_concurrency:
                busy = True
            else:
                busy = False
                self.in_flight += 1
        if busy:
            response = JSONResponse(
                {"error": "overloaded: too many requests in flight, retry later"}, 503, headers={"Retry-After": "1"}
            )
            await response(scope, receive, send)
            return
        try:
            handler = self.uploads if upload and self.uploads is not None else self.app
            await self._guarded(scope, receive, send, handler, limit)
        finally:
            with self.lock:
                self.in_flight -= 1

    async def _guarded(self, scope: dict, receive: Any, send: Any, handler: Any, limit: int) -> None:
        """Run ``handler`` with its request body capped at ``limit`` bytes (413) and to be received within
        the body timeout (408); once the body is in, ``receive`` (a wait for the client to go) has no
        deadline."""
        received = 0
        started = False
        body_done = False
        cut: str | None = None  # why the body was cut short: "large" or "slow"
        # A slow or stalled upload holds a slot of the concurrency limit: it gets a deadline.
        deadline = asyncio.get_running_loop().time() + self.config.body_timeout

        async def limited_receive() -> dict:
            nonlocal received, cut, body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):  # wait_for made a task for every message
                    message = await receive()
            except TimeoutError:
                cut = "slow"
                raise _BodyCut from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut = "large"
                    raise _BodyCut
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if cut is not None:
                return  # the app's answer to a body cut short (often a generic 400) is replaced below
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await handler(scope, limited_receive, tracking_send)
        except _BodyCut:
            pass
        if cut is not None and not started:
            if cut == "large":
                response = JSONResponse({"error": f"request body over {limit} bytes"}, 413)
            else:
                error = f"request body not received within {self.config.body_timeout:g} s: upload timed out"
                response = JSONResponse({"error": error}, 408)
            # The rest of the body is never read, so the connection cannot be reused.
            response.headers["Connection"] = "close"
            await response(scope, receive, send)


def create_app(recognizer: Recognizer | None = None, config: ServerConfig | None = None) -> Any:
    """The ASGI app to serve: the FastAPI app (reachable as ``.app``) inside the size and concurrency limits.

    The model is loaded here, so a broken model fails at start, not at the first request.
    """
    config = config or ServerConfig()
    rec = recognizer or load_recognizer()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        # The limiter of the thread pool that runs the image work of the requests (`answer` below), in
        # this process's event loop.
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = config.threads or os.cpu_count() or 1
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="digitrec",
        version=__version__,
        description="Handwritten digit recognition: predict a digit, read a number, reject non-digits.",
    )

    if config.ui or config.cors_origins:  # without either, FastAPI alone sends no CORS headers
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        missing = [".".join(str(p) for p in e.get("loc", ())[1:]) for e in exc.errors()]
        return JSONResponse({"error": f"invalid request: missing or bad field {', '.join(missing) or '?'}"}, 422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug of ours: still a JSON answer, without a traceback (the server log has it).
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); please report it"}, 500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Keep the exception's headers: a 405 must say which methods are allowed (Allow).
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    uploads = _Uploads(rec, config)

    async def answer(request: Request) -> JSONResponse:
        # Served by `_Limits` through `uploads` directly; this route is reached only when the FastAPI
        # app is used on its own (``create_app(...).app``).
        status, payload = await uploads.answer(
            request.url.path, request.headers.get("content-type", ""), await request.body()
        )
        return JSONResponse(payload, status)

    @app.post(
        "/v1/predict",
        summary="The digit in an image (null when there is none)",
        response_model=Prediction,
        responses=ERRORS,
        openapi_extra=UPLOAD_BODY,
    )
    async def predict(request: Request) -> Any:
        return await answer(request)

    @app.post(
        "/v1/read",
        summary="A line of digits in an image, left to right, with boxes",
        response_model=Reading,
        responses=ERRORS,
        openapi_extra=UPLOAD_BODY,
    )
    async def read(request: Request) -> Any:
        return await answer(request)

    # The probes and the model card are async: they answer from the event loop at once, even when every
    # request thread is busy reading images.
    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and answers")
    async def readyz() -> dict[str, str]:
        return {"status": "ready", "engine": rec.engine}

    model_info = _model_info(rec)

    @app.get("/v1/model", summary="The model: name, version, sha256, classes, test metrics")
    async def model() -> dict[str, Any]:
        return model_info

    if config.ui:
        import gradio as gr

        from .ui import build_ui

        app = gr.mount_gradio_app(
            app,
            build_ui(rec),
            path="/",
            max_file_size=config.max_upload_bytes,
            allowed_paths=[],
            footer_links=["api"],
        )
    return _Limits(app, config, uploads)


def _model_info(rec: Recognizer) -> dict[str, Any]:
    from ..models import file_sha256

    meta = rec.metadata
    test = meta.get("metrics", {}).get("test", {})
    return {
        "name": meta.get("architecture"),
        "version": __version__,
        "sha256": file_sha256(rec.path),
        "engine": rec.engine,
        "classes": rec.class_names,
        "rejects_non_digits": rec.reject_class is not None,
        "test_metrics": {k: test[k] for k in ("accuracy", "macro_avg", "weighted_avg") if k in test},
    }


def _bound_heap() -> None:
    """Keep a long-running server's memory flat (glibc only; elsewhere nothing to do).

    Every request allocates image buffers of varying size, from 40 kB to tens of MB. glibc serves
    large ones from the heap once its adaptive mmap threshold has grown (up to 32 MB), and the heap then
    fragments: resident memory crept up by ~49 MB in a 60 s soak. A fixed threshold of 4 MB sends the
    big buffers (a large photo's pixels) to mmap, returned to the system when freed, and keeps the
    working images of at most 640x640 (1.6 MB as float32) on the heap, reused without page faults: a
    threshold of 128 kB kept memory as flat but made `serve --workers 2` 7-9% slower (three A/B runs,
    `wrk -t1 -c8`). Two arenas stop each thread from growing its own.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_mmap_threshold, m_arena_max = -3, -8  # from glibc's malloc.h
    mallopt(m_mmap_threshold, 4 * 1024 * 1024)
    mallopt(m_arena_max, 2)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's HTTP protocol (httptools) with bounds on what a connection may hold: the request head's
    size, header count and time, and the number of connections (see `ServerConfig`). uvicorn bounds
    none of these with httptools (h11_max_incomplete_event_size is for h11 only, which was ~44 ms a
    request slower here: pyproject.toml), and arms its keep-alive timer only after a first response.
    The limits are class attributes, set by `use_limits` in each server process before it serves."""

    limits = ServerConfig()

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_bytes = 0  # of the current request's head
        self.header_count = 0  # lines of it
        self.head_tail = b""  # its last 3 bytes so far: the blank line that ends it may span two packets
        self.in_head = True  # no request yet: the head timer runs from the connection's start
        self.head_timer: asyncio.TimerHandle | None = self.loop.call_later(self.limits.head_timeout, self._too_slow)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "too many connections")

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        if getattr(self, "head_timer", None) is not None:
            self.head_timer.cancel()  # type: ignore[union-attr]
            self.head_timer = None

    def _refuse(self, status: int, reason: str) -> None:
        self._stop_head_timer()
        if not self.transport.is_closing():
            body = json.dumps({"error": reason}).encode()
            head = (
                f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.transport.write(head.encode("latin-1") + body)
            self.transport.close()

    def _too_slow(self) -> None:
        self.head_timer = None
        if self.in_head:
            self._refuse(408, f"request head not received within {self.limits.head_timeout:g} s")

    def data_received(self, data: bytes) -> None:
        # The head is measured before the parser sees it: httptools gathers a header line whole before
        # its callbacks run, and a head with its body can come in one packet.
        if self.in_head:
            window = self.head_tail + data
            end = window.find(b"\r\n\r\n")
            head = data if end < 0 else data[: max(0, end + 4 - len(self.head_tail))]
            self.head_bytes += len(head)
            self.header_count += head.count(b"\n")  # lines: the request line, the headers, the blank one
            self.head_tail = window[-3:]
            if self.head_bytes > self.limits.max_head_bytes:
                self._refuse(431, f"request head over {self.limits.max_head_bytes} bytes")
                return
            if self.header_count > self.limits.max_headers + 2:
                self._refuse(431, f"more than {self.limits.max_headers} headers")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.head_timer is None:  # a kept-alive connection's next request: its head is timed too
            self.head_timer = self.loop.call_later(self.limits.head_timeout, self._too_slow)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.in_head, self.head_bytes, self.header_count, self.head_tail = True, 0, 0, b""  # the next head


def use_limits(config: ServerConfig) -> dict[str, Any]:
    """Set this process's connection limits from ``config``; uvicorn's settings that go with them."""
    GuardedHttpTools.limits = config
    return {"http": GuardedHttpTools, "timeout_keep_alive": config.keep_alive}


def app_from_environment() -> Any:
    """The app of one worker process when serving with several (uvicorn imports it by name)."""
    import cv2

    from ..reading.images import quiet_decoder_warnings

    _bound_heap()
    cv2.setNumThreads(1)
    quiet_decoder_warnings()
    config = ServerConfig(
        max_upload_bytes=int(os.environ["DIGITREC_MAX_UPLOAD"]),
        max_concurrency=int(os.environ["DIGITREC_MAX_CONCURRENCY"]),
        body_timeout=float(os.environ["DIGITREC_BODY_TIMEOUT"]),
        ui=os.environ["DIGITREC_UI"] == "1",
        ui_elsewhere=os.environ.get("DIGITREC_UI_ELSEWHERE") == "1",
        threads=int(os.environ["DIGITREC_SERVER_THREADS"]),
        cors_origins=tuple(json.loads(os.environ["DIGITREC_CORS_ORIGINS"])),
        **json.loads(os.environ["DIGITREC_CONNECTION_LIMITS"]),
    )
    use_limits(config)
    model = os.environ.get("DIGITREC_MODEL") or None
    return create_app(load_recognizer(model, reader=os.environ.get("DIGITREC_READER", "auto")), config)


def default_workers() -> int:
    """Worker processes when none are asked for: one per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    model: str | os.PathLike | None = None,
    config: ServerConfig | None = None,
    log_level: str = "info",
    workers: int = 0,
) -> None:
    """Load the model (failing now if it is broken), then serve until Ctrl-C or SIGTERM, draining requests.

    ``workers``: processes, each with the model (the concurrency limit is per process), serving the
    connections that this process accepts and deals among them (see `_Workers`); 0, one per core. The
    web UI keeps a browser's session in one process, so with several workers it lives in the first
    and the supervisor deals it every connection that does not begin with an API request.
    """
    import cv2

    workers = workers or default_workers()
    # Requests already run in parallel on the server's threads: per-request thread pools in ONNX Runtime
    # and OpenCV would only oversubscribe the cores (measured slower in benchmarks/serve.py).
    os.environ.setdefault("DIGITREC_THREADS", "1")
    cv2.setNumThreads(1)
    _bound_heap()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    config = config or ServerConfig()
    with _private_gradio_tmp(config.ui):
        # A broken model fails here, before binding. The line reader: $DIGITREC_READER (`serve --reader`).
        rec = load_recognizer(model, reader=os.environ.get("DIGITREC_READER", "auto"))
        if workers <= 1:
            uvicorn.run(
                create_app(rec, config),
                host=host,
                port=port,
                log_level=log_level,
                timeout_graceful_shutdown=10,
                **use_limits(config),
            )
            return
        del rec
        os.environ.update(
            DIGITREC_MODEL=str(model or ""),
            DIGITREC_MAX_UPLOAD=str(config.max_upload_bytes),
            DIGITREC_MAX_CONCURRENCY=str(config.max_concurrency),
            DIGITREC_BODY_TIMEOUT=str(config.body_timeout),
            DIGITREC_SERVER_THREADS=str(config.threads),
            DIGITREC_CORS_ORIGINS=json.dumps(list(config.cors_origins)),
            DIGITREC_CONNECTION_LIMITS=json.dumps({name: getattr(config, name) for name in CONNECTION_LIMITS}),
        )
        listener = listen_socket(host, port)  # a port in use fails here, before any worker starts
        uv_config = uvicorn.Config(
            "digitrec.serving.server:app_from_environment",
            factory=True,
            log_level=log_level,
            timeout_graceful_shutdown=10,
            **use_limits(config),
        )
        _Workers(uv_config, listener, workers, ui=config.ui, head_timeout=config.head_timeout).run()


def listen_socket(host: str, port: int) -> socket.socket:
    """The server's listening socket on ``host:port`` (port 0: a free one); a port in use is an error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


class _HandedServer(uvicorn.Server):
    """A uvicorn server with no listening socket of its own: it serves the connections that the
    supervisor accepts and hands it, as file descriptors over ``channel`` (a Unix socket)."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket) -> None:
        super().__init__(config)
        self.channel = channel
        self.handing: set[asyncio.Task] = set()  # connections being set up (the loop keeps weak references)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])
        config, loop = self.config, asyncio.get_running_loop()

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            # What uvicorn's own startup makes for each connection of a listening socket.
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        self.channel.setblocking(False)
        loop.add_reader(self.channel.fileno(), self._take, loop, create_protocol)

    def _take(self, loop: asyncio.AbstractEventLoop, create_protocol: Any) -> None:
        try:
            _, fds, _, _ = socket.recv_fds(self.channel, 1, 16)
        except BlockingIOError:
            return
        except OSError:
            fds = None
        if not fds:  # the supervisor is gone: finish what is in flight and exit
            loop.remove_reader(self.channel.fileno())
            self.should_exit = True
            return
        for fd in fds:
            task = loop.create_task(self._serve_connection(loop, create_protocol, socket.socket(fileno=fd)))
            self.handing.add(task)
            task.add_done_callback(self.handing.discard)

    @staticmethod
    async def _serve_connection(loop: asyncio.AbstractEventLoop, create_protocol: Any, conn: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(create_protocol, conn)
        except OSError:  # the client left before it could be served
            conn.close()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        with contextlib.suppress(OSError, ValueError):
            asyncio.get_running_loop().remove_reader(self.channel.fileno())  # take no new connections
        await super().shutdown(sockets=sockets)


class _WorkerProcess(Process):
    """uvicorn's worker process (pinged by the supervisor), running a `_HandedServer` on the channel
    given as its one "socket"."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover (in the child)
        if not sockets:
            raise RuntimeError("a worker needs the channel its connections come on")
        threading.Thread(target=self.always_pong, daemon=True).start()
        self._server = _HandedServer(self.config, sockets[0])
        self._server.run()


class _Workers:
    """The supervisor of ``n`` worker processes (uvicorn's own, `uvicorn.supervisors.Multiprocess`,
    but dealing the connections itself): it accepts every connection on the one listening socket and
    hands each to the next worker in turn, over a Unix socket, so that a few long-lived (keep-alive)
    connections spread evenly. It replaces a worker that dies or hangs (a connection it could not
    take goes to the next), stops all of them if one exits with an error before it has served
    (another would fail the same way; `run` then raises once they have stopped), and on SIGINT or
    SIGTERM stops accepting and passes SIGTERM on to each (uvicorn drains the requests in flight).

    uvicorn's workers share the listening socket, and whichever wakes first accepts every connection
    waiting: `wrk -c8` against two workers gave 330-350 requests/s (all on one worker) or 690-715
    from one run to the next. A socket each (SO_REUSEPORT; the kernel picks one by a hash of the
    client's address and port) gave 745-790, but the hash put 5, 6, 7 or all 8 of the connections on
    one worker in about 3 runs in 4, and the p99 latency followed (15-33 ms).
    """

    def __init__(
        self, config: uvicorn.Config, listener: socket.socket, n: int, ui: bool = False, head_timeout: float = 10.0
    ) -> None:
        self.config, self.listener, self.n = config, listener, n
        self.ui, self.head_timeout = ui, head_timeout
        self.processes: list[Any] = []
        self.channels: list[socket.socket] = []  # the supervisor's end of each worker's channel
        self.lock = threading.Lock()  # held to hand a connection over, and to replace a channel
        self.should_exit = threading.Event()
        self.failed = False  # a worker could not start: `run` raises once the others have stopped

    def _start(self, k: int) -> Any:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)  # a hung worker's full channel must not stall the others' connections
        process = _WorkerProcess(self.config, [theirs])
        # The first worker holds the UI; the others send its paths there (`ServerConfig.ui_elsewhere`).
        # A spawned child takes this process's environment as it is at start.
        os.environ["DIGITREC_UI"] = "1" if self.ui and k == 0 else "0"
        os.environ["DIGITREC_UI_ELSEWHERE"] = "1" if self.ui and k != 0 else "0"
        process.start()  # the child gets its own copy of `theirs` (multiprocessing shares it)
        theirs.close()
        with self.lock:
            if k < len(self.channels):
                self.channels[k].close()
                self.channels[k] = ours
            else:
                self.channels.append(ours)
        return process

    def _hand(self, conn: socket.socket, first: int) -> None:
        """Hand ``conn`` to worker ``first``, or the next that can take it, and close our copy."""
        with conn, self.lock:
            for k in range(first, first + self.n):
                try:
                    socket.send_fds(self.channels[k % self.n], [b"c"], [conn.fileno()])
                    return
                except OSError:  # a dead or stuck worker: the next one takes it
                    continue
        logging.getLogger("uvicorn.error").warning("no worker could take a connection; closed it")

    def _accept(self) -> socket.socket | None:
        try:
            conn, _ = self.listener.accept()
            return conn
        except (TimeoutError, BlockingIOError):  # none waiting (one that reset before it was accepted)
            return None
        except OSError as e:  # out of file descriptors, say: wait for some to be freed
            logging.getLogger("uvicorn.error").warning(f"accept failed: {e}")
            time.sleep(0.1)
            return None

    def _deal(self) -> None:
        """Accept connections and hand each to the next worker in turn, until told to stop."""
        if self.ui:
            self._deal_by_path()
            return
        self.listener.settimeout(0.25)  # wake up now and then to see whether to stop
        turn = 0
        while not self.should_exit.is_set():
            conn = self._accept()
            if conn is not None:
                self._hand(conn, turn)
                turn += 1

    def _deal_by_path(self) -> None:
        """With the UI: wait for a connection's first bytes (peeked, left for the worker to read); a
        connection that begins with an API request goes to the next worker in turn, any other to the
        UI's (worker 0), which serves every path. A connection that sends nothing within the head
        timeout gets 408 and is closed; at most `PENDING` wait at once, past that they go in turn unseen."""
        import selectors

        turn = 0
        pending: dict[socket.socket, float] = {}  # connection -> when it is given up
        with selectors.DefaultSelector() as selector:
            self.listener.setblocking(False)
            selector.register(self.listener, selectors.EVENT_READ)
            while not self.should_exit.is_set():
                for key, _ in selector.select(timeout=0.25):
                    conn = key.fileobj
                    if conn is self.listener:
                        conn = self._accept()
                        if conn is None:
                            continue
                        if len(pending) >= self.PENDING:
                            self._hand(conn, turn)
                            turn += 1
                            continue
                        pending[conn] = time.monotonic() + self.head_timeout
                        selector.register(conn, selectors.EVENT_READ)
                        continue
                    selector.unregister(conn)
                    del pending[conn]
                    try:
                        head = conn.recv(64, socket.MSG_PEEK)
                    except OSError:
                        head = b""
                    if not head:  # closed before it asked anything
                        conn.close()
                        continue
                    parts = head.split(b" ", 2)
                    if len(parts) > 1 and parts[1].startswith(API_PREFIXES):
                        self._hand(conn, turn)
                        turn += 1
                    else:
                        self._hand(conn, 0)
                now = time.monotonic()
                for conn in [c for c, deadline in pending.items() if deadline < now]:
                    selector.unregister(conn)
                    del pending[conn]
                    with conn, contextlib.suppress(OSError):
                        conn.setblocking(False)
                        conn.send(self._too_slow)
            for conn in pending:
                conn.close()

    PENDING = 1000  # connections waiting for their first bytes, at most

    @property
    def _too_slow(self) -> bytes:
        """The 408 of a connection that sent nothing within the head timeout, as a worker answers it."""
        body = json.dumps({"error": f"request head not received within {self.head_timeout:g} s"}).encode()
        head = "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body

    def run(self) -> None:
        import signal

        from uvicorn.config import STARTUP_FAILURE

        log = logging.getLogger("uvicorn.error")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.should_exit.set())
        self.processes = [self._start(k) for k in range(self.n)]
        dealer = threading.Thread(target=self._deal, name="digitrec-accept", daemon=True)
        dealer.start()
        host, port = self.listener.getsockname()[:2]
        log.info(f"Started parent process [{os.getpid()}] with {self.n} workers on http://{host}:{port}")
        ready = [False] * self.n  # has it served yet? (uvicorn's "started")
        while not self.should_exit.wait(0.5):
            for k, process in enumerate(self.processes):
                if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                    ready[k] = ready[k] or process.is_ready(timeout=1)
                    continue
                exitcode = process.exitcode  # None: alive but hung
                process.kill()
                process.join()
                if exitcode == STARTUP_FAILURE or (exitcode is not None and exitcode > 0 and not ready[k]):
                    # It exited with an error before serving (the app or its model cannot load):
                    # another would too. (Killed by a signal, or hung, it is replaced.)
                    log.error(f"Worker [{process.pid}] failed to start; stopping")
                    self.failed = True
                    self.should_exit.set()
                    break
                log.info(f"Worker [{process.pid}] died; starting another")
                self.processes[k], ready[k] = self._start(k), False
        dealer.join()
        self.listener.close()  # new connections are refused from here on
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join()
        for channel in self.channels:
            channel.close()
        if self.failed:
            raise RuntimeError("a worker process failed to start (its error is in the log above)")


@contextlib.contextmanager
def _private_gradio_tmp(ui: bool) -> Any:
    """Gradio's uploads go to a private temp directory (mode 0700), removed when the server stops,
    unless GRADIO_TEMP_DIR names one already.

    uvicorn re-raises SIGTERM once it has drained the requests; with the default handler the process
    would die there, before any cleanup (every server start left a directory behind). A handler that
    exits instead lets the directory go; the exit status is then 143, the shell's "ended by SIGTERM".
    """
    import shutil
    import signal
    import tempfile

    if not ui or "GRADIO_TEMP_DIR" in os.environ:
        yield
        return
    path = tempfile.mkdtemp(prefix="digitrec-gradio-")
    os.environ["GRADIO_TEMP_DIR"] = path
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_signal) if in_main else None
    try:
        yield
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        os.environ.pop("GRADIO_TEMP_DIR", None)
        shutil.rmtree(path, ignore_errors=True)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)
