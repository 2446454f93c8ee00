"""`llast serve`: an OpenAI-compatible speech translation server (FastAPI + uvicorn).

    POST /v1/audio/translations     multipart: file, model, language, prompt, response_format, temperature
    POST /v1/audio/transcriptions   the same fields; transcribes (target language = source language)
         -> 200 json {"text"} | text | srt | vtt | verbose_json {"task", "language", "duration", "text", "segments"}
    GET  /health   -> {"status": "ok", "model", "batches_run", "requests_in_progress", "queued_requests", "pending_segments",
                       "live_segments_decoded_ahead": {"started", "used"}, ...}
    GET  /docs     the OpenAPI page (schema at /openapi.json)
    WS   /v1/realtime   live translation, OpenAI Realtime transcription-session events (llast.realtime)
    GET  /         the live page: microphone or file in, segments as they end, SRT out (llast.realtime)

OpenAI's clients work unchanged: ``OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=KEY)``.

- `language` is the SOURCE language (OpenAI's translations endpoint has no such field; llast needs it).
  Without it the server's `--default-src` is used; with neither, the request gets a 400 naming the field.
  Translations go into `--tgt` (default en). `model` is accepted and echoed in the logs (one model is
  served). `prompt` is accepted and not used (the prompt is the checkpoint's template). `temperature`
  must be in [0, 1] and is accepted; decoding stays deterministic (beam search, `--num-beams`).
- Audio is cut into speech segments (llast.segment) and segments, not files, are batched across
  requests, taking one segment from each waiting request in turn: a 3 s request is not queued behind
  a 10-minute one. A request whose segment fails to decode gets its own error; the batch's others
  are decoded without it.
- Limits: upload size (413), decoded length and duration x channels x rate (413), waiting requests
  (503 + Retry-After; a request takes its place before its audio is read or segmented, and long
  uploads' speech detection runs `max_planning` at a time), seconds to send the request body (408),
  request line + headers (64 KiB: 431), seconds to send the headers (`header_timeout`: closed), open
  connections (uvicorn's limit_concurrency: 503). Connections whose headers are not in yet are bounded
  apart (HeaderGuard), so clients without a key cannot fill the connection cap; the API key is checked
  before the body is read, and a 401 closes its connection. Bad audio or fields: 400 or 422, with an
  OpenAI-style error body; any other failure is a JSON 500 and one log line (no traceback).
  Untrusted values are quoted in the log. A client that disconnects has its remaining segments dropped.
- Every upload is segmented as `llast translate` segments a file (llast.segment.plan_segments): a clip
  within the model's window is decoded whole, a longer one as speech segments read back one by one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import uvicorn
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from uvicorn.protocols.http.h11_impl import H11Protocol

from llast.audio import SAMPLE_RATE, audio_duration, load_audio
from llast.batcher import Batcher, Job, RequestError
from llast.config import DecodeConfig
from llast.errors import AudioError, ConfigError, LlastError
from llast.processor import Example, language_name
from llast.realtime import add_live_routes
from llast.segment import Segment, SegmentOptions, plan_segments
from llast.subtitles import joined_text, render, to_dicts

log = logging.getLogger("llast.serve")
MAX_HEADER_BYTES = 64 * 1024  # request line + headers (431 beyond)

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]


@dataclass
class ServeOptions:
    model_name: str = "llast"
    default_src: str | None = None  # source language when a request has no `language`
    tgt: str = "en"  # target language of /v1/audio/translations
    api_key: str | None = None  # if set, requests need "Authorization: Bearer <api_key>"
    max_wait_ms: float = 20.0  # how long a batch waits for more segments when it is not full
    max_queue: int = 64  # requests waiting or decoding; one more gets 503 + Retry-After
    max_upload_mb: float = 64.0  # request body limit (413)
    max_audio_seconds: float = 3600.0  # decoded length limit (413)
    max_input_samples: int = 1800 * 2 * 48000  # seconds x channels x rate of the upload (413)
    read_timeout: float = 30.0  # seconds to receive a request body (408); a live stream's idle limit
    header_timeout: float = 10.0  # seconds a new connection has to send its request line and headers
    max_planning: int = 1  # long uploads being cut into segments (speech detection) at once; others wait, queued
    max_streams: int = 16  # live streams (/v1/realtime) at once
    speculate: bool = True  # live streams: decode a segment when its speech pauses, before it closes (llast.live)
    decode: DecodeConfig | None = None  # how every request is decoded (checked where made); None: the model's own

    def __post_init__(self) -> None:
        for name in ("max_wait_ms", "max_queue", "max_upload_mb", "max_audio_seconds", "max_input_samples", "read_timeout",
                     "header_timeout", "max_planning", "max_streams"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"serve option {name} must be positive, got {getattr(self, name)}")
        for lang in (self.default_src, self.tgt):
            if lang is not None:
                language_name(lang)


def _error_body(message: str, param: str | None = None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


class BodyLimits:
    """ASGI middleware: refuses bodies over `max_bytes` (413) and bodies not received within `timeout`
    seconds (408), before the application parses them; later receives (disconnect checks) pass through."""

    def __init__(self, app, max_bytes: int, timeout: float, api_key: str | None = None):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout
        self.expected = None if api_key is None else f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw_headers = scope.get("headers") or []
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + sum(len(k) + len(v) + 4 for k, v in raw_headers)
        if size > MAX_HEADER_BYTES:  # h11 limits only headers that arrive in pieces; one big read passes it
            return await self._reply(send, 431, f"request line and headers of {size} bytes are over the limit of {MAX_HEADER_BYTES}")
        headers = dict(raw_headers)
        if self.expected is not None and scope["path"].startswith("/v1/"):
            # Checked before the body is read: an unauthenticated client cannot make the server parse uploads.
            if not secrets.compare_digest(headers.get(b"authorization", b""), self.expected):
                return await self._reply(send, 401, "missing or wrong API key (send 'Authorization: Bearer <key>')")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._reply(send, 413, f"request body of {int(length)} bytes is over the limit of {self.max_bytes}")
        state = {"received": 0, "complete": False, "failed": None, "started": False}
        deadline = time.monotonic() + self.timeout

        async def limited_receive():
            if state["complete"] or state["failed"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                state["failed"] = (408, f"request body not received within {self.timeout:g} s")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                state["complete"] = not message.get("more_body", False)
                if state["received"] > self.max_bytes:
                    state["failed"] = (413, f"request body is over the limit of {self.max_bytes} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if state["failed"]:  # the app answered a body cut short by us: send our answer instead
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    await self._reply(send, *state["failed"])
                return
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception as e:  # noqa: BLE001 - a bug or an unforeseen input: one log line, a JSON 500, no traceback
            if not state["failed"]:
                log.error("%s %s: internal error: %s: %s", scope.get("client"), scope.get("path"), type(e).__name__,
                          _quoted(str(e)))
                if not state["started"]:
                    state["started"] = True
                    await self._reply(send, 500, "internal server error", kind="server_error")
        if state["failed"] and not state["started"]:
            await self._reply(send, *state["failed"])

    @staticmethod
    async def _reply(send, status: int, message: str, kind: str = "invalid_request_error") -> None:

        body = json.dumps(_error_body(message, kind=kind)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _save_upload(upload, max_bytes: int) -> str:
    """Copy an UploadFile to a named temporary file (kept for the request's life); returns its path."""
    suffix = Path(upload.filename or "").suffix.lower()
    suffix = suffix if suffix[1:].isalnum() and len(suffix) <= 6 else ""
    fd, path = tempfile.mkstemp(prefix="llast-upload-", suffix=suffix)
    with os.fdopen(fd, "wb") as out:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, out)
        size = out.tell()
    if size == 0:
        os.unlink(path)
        raise RequestError(400, "the uploaded file is empty", "file")
    if size > max_bytes:
        os.unlink(path)
        raise RequestError(413, f"the uploaded file is over the limit of {max_bytes} bytes", "file")
    return path


def _plan_job(path: str, src: str, tgt: str, task: str, seg_opts: SegmentOptions, opts: ServeOptions,
              cancel: threading.Event, gate: threading.Semaphore) -> Job:
    """Read and segment an uploaded file (runs in a worker thread) exactly as `llast translate` does
    (llast.segment.plan_segments): a Job, or RequestError for bad audio. A clip within the model's
    window is read whole; a longer one is cut into speech segments, read back one by one when decoded,
    after waiting for `gate` (speech detection of long uploads runs `max_planning` at a time). Setting
    `cancel` stops the waiting and the segmentation (InterruptedError)."""
    try:
        seconds = audio_duration(path)
        if seconds > opts.max_audio_seconds:
            raise RequestError(413, f"audio of {seconds:.0f} s is over the limit of {opts.max_audio_seconds:g} s", "file")
        if seconds <= seg_opts.max_seconds + 1e-3:  # plan_segments' own rule: decoded as one clip
            wav = load_audio(path, max_samples=opts.max_input_samples)
            return Job(src, tgt, task, plan_segments(wav, seg_opts), wav=wav, seconds=seconds)
        while not gate.acquire(timeout=0.25):
            if cancel.is_set():
                raise InterruptedError("request cancelled while waiting for speech detection")
        try:
            plan = plan_segments(path, seg_opts, max_samples=opts.max_input_samples, cancel=cancel)
        finally:
            gate.release()
        return Job(src, tgt, task, plan, path=path, seconds=seconds)
    except LlastError as e:
        message = str(e).replace(path, "uploaded file")
        raise RequestError(413 if "limit" in message else 400, message, "file") from None


def _response(segments: list[Segment], fmt: str, task: str, src: str, duration: float):
    if fmt == "json":
        return JSONResponse({"text": joined_text(segments)})
    if fmt == "verbose_json":
        segs = [{"id": i, "seek": 0, **d} for i, d in enumerate(to_dicts(segments))]
        return JSONResponse({"task": task, "language": src, "duration": round(duration, 3),
                             "text": joined_text(segments), "segments": segs})
    media = {"vtt": "text/vtt", "srt": "application/x-subrip"}.get(fmt, "text/plain")
    return PlainTextResponse(render(segments, fmt), media_type=f"{media}; charset=utf-8")


async def _until_done(request: Request, future) -> bool:
    """Wait for `future`; False (and the future cancelled) if the client disconnects first."""
    while not (await asyncio.wait({future}, timeout=0.25))[0]:
        if await request.is_disconnected():
            future.cancel()
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no "never retrieved" log
            return False
    return True


def _planned(ctx: dict, *args) -> Job:
    """_plan_job, counted in ctx["planning"] while it runs (Server.stop waits for these threads)."""
    with ctx["lock"]:
        ctx["planning"] += 1
    try:
        return _plan_job(*args)
    finally:
        with ctx["lock"]:
            ctx["planning"] -= 1


async def _handle(ctx: dict, request: Request, task: str, file, model, language, response_format):
    """One request: check the fields, save and segment the upload, wait for its segments, answer."""
    opts, batcher = ctx["opts"], ctx["batcher"]
    t0 = time.monotonic()
    src = language or opts.default_src
    if not src:
        raise RequestError(400, "language: the source language is required (this server has no --default-src)", "language")
    try:
        language_name(src)
    except LlastError as e:
        raise RequestError(400, f"language: {e}", "language") from None
    tgt = src if task == "transcribe" else opts.tgt
    batcher.reserve()  # a place in the queue before any work on the audio (503 when the queue is full)
    queued, path, job, segments = False, None, None, None
    cancel = threading.Event()
    ctx["requests"].add(cancel)
    try:
        path = await run_in_threadpool(_save_upload, file, ctx["max_bytes"])
        planning = asyncio.ensure_future(run_in_threadpool(
            _planned, ctx, path, src, tgt, task, ctx["seg_opts"], opts, cancel, ctx["gate"]))
        if await _until_done(request, planning):
            job = planning.result()
            queued = True
            decoding = asyncio.wrap_future(batcher.submit(job))
            if await _until_done(request, decoding):
                segments = decoding.result()
    except AudioError as e:
        raise RequestError(400, str(e).replace(path or "\0", "uploaded file"), "file") from None
    except RequestError:
        raise
    except Exception as e:  # noqa: BLE001 - one line in the log, a JSON 500 to the client
        log.error("%s %s: decoding failed: %s", _client(request), request.url.path, _quoted(e))
        raise RequestError(500, f"decoding failed: {e}", kind="server_error") from None
    finally:
        cancel.set()  # stops a segmentation still running (or waiting) for a client that has gone
        if not queued:
            batcher.release()
        if job is not None and segments is None:
            batcher.cancel(job)
        ctx["requests"].discard(cancel)
        if path is not None:
            os.unlink(path)  # a segmentation still reading it keeps its open handle
    if segments is None:
        log.info("%s %s: client disconnected; its work is dropped", _client(request), request.url.path)
        return JSONResponse(_error_body("client disconnected"), status_code=499)
    log.info("%s %s model=%s src=%s format=%s: %d segments, %.1f s of audio, %.2f s", _client(request),
             request.url.path, _quoted(model), _quoted(src), response_format, len(segments), job.seconds,
             time.monotonic() - t0)
    return _response(segments, response_format, task, src, job.seconds)


def _quoted(value, limit: int = 200) -> str:
    """An untrusted value as it goes into a log line: quoted, escaped (no raw newline can forge a line), cut."""

    text = value if isinstance(value, str) or value is None else str(value)
    return json.dumps(text if text is None or len(text) <= limit else text[:limit] + "...", ensure_ascii=True)


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "-"


def create_app(translator, opts: ServeOptions | None = None, seg_opts: SegmentOptions | None = None):
    """The ASGI application: FastAPI around `translator` (llast.decode.Translator), inside BodyLimits.
    The FastAPI app and its Batcher are the result's `.fastapi` and `.batcher`."""
    opts = opts or ServeOptions()
    seg_opts = seg_opts or translator.segment_options()
    batcher = Batcher(translator, opts.max_wait_ms, opts.max_queue, opts.decode)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.stop()

    app = FastAPI(title="llast", description=__doc__.split("\n\n")[0], version="1", lifespan=lifespan)
    max_bytes = int(opts.max_upload_mb * 1024 * 1024)
    ctx = {"opts": opts, "seg_opts": seg_opts, "batcher": batcher, "max_bytes": max_bytes,
           "ahead": {"started": 0, "used": 0},  # live segments decoded before they closed (llast.realtime)
           "requests": set(), "planning": 0, "lock": threading.Lock(), "gate": threading.Semaphore(opts.max_planning)}

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return JSONResponse(_error_body(str(exc), exc.param, exc.kind), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        return JSONResponse(_error_body(f"{param or 'request'}: {first['msg']}", param), status_code=422)

    def endpoint(task: str):
        async def audio_endpoint(
            request: Request,
            file: UploadFile = File(..., description="audio file (wav, flac, mp3, ogg; any rate)"),
            model: str | None = Form(None, description="accepted for compatibility; this server has one model"),
            language: str | None = Form(None, description="SOURCE language code (fr, de, zh-CN, ...)"),
            prompt: str | None = Form(None, description="accepted and not used (the checkpoint's prompt is used)"),
            response_format: ResponseFormat = Form("json"),
            temperature: float = Form(0.0, ge=0.0, le=1.0, description="accepted; decoding is deterministic"),
        ):
            return await _handle(ctx, request, task, file, model, language, response_format)

        return audio_endpoint

    app.post("/v1/audio/translations", summary="translate speech into --tgt")(endpoint("translate"))
    app.post("/v1/audio/transcriptions", summary="transcribe speech")(endpoint("transcribe"))

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": opts.model_name, "batches_run": batcher.batches_run,
                "requests_in_progress": len(ctx["requests"]), "queued_requests": len(batcher.active),
                "pending_segments": batcher.pending_segments(), "live_segments_decoded_ahead": dict(ctx["ahead"]),
                "connections_closed_before_headers": ctx["guard"].closed_early if "guard" in ctx else 0}

    add_live_routes(app, ctx)

    # The multipart envelope around the file is allowed 64 KiB on top of the file's limit.
    wrapped = BodyLimits(app, max_bytes + 64 * 1024, opts.read_timeout, opts.api_key)
    wrapped.fastapi, wrapped.batcher, wrapped.ctx = app, batcher, ctx
    return wrapped


class HeaderGuard:
    """New connections until their request headers are in: each gets `timeout` seconds for them; at most
    `max_pending` such connections are open (and `per_client` from one address); beyond that the oldest
    is closed. So clients that connect and send nothing (or never finish their headers) cannot fill the
    server's connection cap (uvicorn's limit_concurrency, which counts every open connection): a new
    connection always gets its chance, and only idle half-open ones are dropped. uvicorn has no header
    timeout of its own (its keep-alive timeout starts after a first response)."""

    def __init__(self, timeout: float, max_pending: int, per_client: int):
        self.timeout, self.max_pending, self.per_client = timeout, max_pending, per_client
        self.pending: collections.OrderedDict = collections.OrderedDict()  # protocol -> client host, oldest first
        self.closed_early = 0  # connections closed by the guard (timeout or eviction), for /health

    def opened(self, protocol, host: str) -> None:
        self.pending[protocol] = host
        protocol.loop.call_later(self.timeout, self._expire, protocol)
        same = [p for p, h in self.pending.items() if h == host]
        if len(same) > self.per_client:
            self._close(same[0])
        while len(self.pending) > self.max_pending:
            self._close(next(iter(self.pending)))

    def done(self, protocol) -> None:
        self.pending.pop(protocol, None)

    def _expire(self, protocol) -> None:
        if protocol in self.pending:
            self._close(protocol)

    def _close(self, protocol) -> None:
        self.pending.pop(protocol, None)
        self.closed_early += 1
        protocol.transport.close()


def guarded_protocol(guard: HeaderGuard) -> type:
    """uvicorn's h11 protocol, reporting each connection to `guard` until its first request's headers are in."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            guard.opened(self, self.client[0] if self.client else "-")

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.scope is not None or self.transport.is_closing():  # headers in (or the connection answered)
                guard.done(self)

        def connection_lost(self, exc) -> None:
            guard.done(self)
            super().connection_lost(exc)

    return GuardedH11Protocol


def warm_up(translator, opts: ServeOptions) -> float:
    """Decode one second of faint noise as the server will decode requests, so that the first clients do not
    wait for first-call costs (allocations, llama.cpp's graphs, its cached template starts); its seconds."""
    start = time.monotonic()
    noise = (np.random.default_rng(0).standard_normal(SAMPLE_RATE) * 1e-3).astype(np.float32)
    src = opts.default_src or opts.tgt
    translator.generate([Example(noise, src, opts.tgt, "translate" if src != opts.tgt else "transcribe")],
                        opts.decode or translator.cfg.decode)
    return time.monotonic() - start


class Server:
    """uvicorn serving `create_app(...)` on host:port (port 0: a free port), in this thread or a background one."""

    def __init__(self, translator, host: str = "127.0.0.1", port: int = 8000, opts: ServeOptions | None = None,
                 seg_opts: SegmentOptions | None = None, max_connections: int = 256, log_level: str = "info"):


        opts = opts or ServeOptions()
        self.app = create_app(translator, opts, seg_opts)
        self.guard = HeaderGuard(opts.header_timeout, max_pending=max(1, max_connections // 2),
                                 per_client=max(1, max_connections // 8))
        self.app.ctx["guard"] = self.guard
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level=log_level, lifespan="on", http=guarded_protocol(self.guard),
            timeout_keep_alive=5,  # idle keep-alive connections are closed after 5 s
            limit_concurrency=max_connections,  # connections + requests in flight; beyond: 503
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,  # request line + headers, while they arrive
            timeout_graceful_shutdown=5,
            # No WebSocket keep-alive pings: a live stream that sends faster than it is decoded is not read for a
            # while (back-pressure, llast.realtime), and its pong would wait behind its audio; idle streams are
            # closed by read_timeout instead.
            ws_ping_interval=None,
        )
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve_forever(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self._drain()

    def _drain(self, timeout: float = 30.0) -> None:
        """Cancel segmentations in progress and wait (up to `timeout`) for the threads that run the model,
        so that none is inside torch when the process exits."""
        ctx = self.app.ctx
        for cancel in list(ctx["requests"]):
            cancel.set()
        self.app.batcher.stop()
        self.app.batcher.thread.join(timeout=timeout)
        deadline = time.monotonic() + timeout
        while ctx["planning"] and time.monotonic() < deadline:
            time.sleep(0.05)

    def start(self) -> Server:
        self.thread = threading.Thread(target=self.serve_forever, name="llast-serve", daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("llast serve: the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving (from another thread) and wait for the server's work to end."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=60)
