"""`llast serve`: an OpenAI-compatible speech translation server (FastAPI + uvicorn).

    POST /v1/audio/translations     multipart: file, model, language, prompt, response_format, temperature
    POST /v1/audio/transcriptions   the same fields; transcribes (target language = source language)
         -> 200 json {"text"} | text | srt | vtt | verbose_json {"task", "language", "duration", "text", "segments"}
    GET  /health   -> {"status": "ok", "model", "batches_run", "requests_in_progress", "queued_requests", "pending_segments"}
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
  (503 + Retry-After), seconds to send the request body (408), open connections (uvicorn's
  limit_concurrency: 503). Bad audio or fields: 400 or 422, with an OpenAI-style error body.
  A client that disconnects has its remaining segments dropped, without a traceback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from llast.audio import audio_duration, load_audio
from llast.errors import AudioError, ConfigError, LlastError
from llast.processor import Example, language_name
from llast.segment import Segment, SegmentOptions, plan_segments, segment_audio
from llast.subtitles import joined_text, render, to_dicts

log = logging.getLogger("llast.serve")

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
    max_streams: int = 16  # live streams (/v1/realtime) at once

    def __post_init__(self) -> None:
        for name in ("max_wait_ms", "max_queue", "max_upload_mb", "max_audio_seconds", "max_input_samples", "read_timeout",
                     "max_streams"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"serve option {name} must be positive, got {getattr(self, name)}")
        for lang in (self.default_src, self.tgt):
            if lang is not None:
                language_name(lang)


class RequestError(Exception):
    """An error the client can fix: HTTP `status`, and the form field it concerns (OpenAI's `param`)."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.headers, self.kind = status, param, headers or {}, kind


@dataclass(eq=False)
class Job:
    """One request: its planned segments, their texts as they are decoded, and a future for the lot."""

    src: str
    tgt: str
    task: str
    plan: list[Segment]
    path: str | None = None  # segments are read from here when needed (long audio) ...
    wav: np.ndarray | None = None  # ... or the whole clip is already in memory (short audio)
    seconds: float = 0.0  # length of the audio
    texts: list = field(default_factory=list)
    next: int = 0  # next segment to put into a batch
    done: int = 0
    cancelled: bool = False
    future: Future = field(default_factory=Future)

    def example(self, i: int) -> Example:
        audio = self.wav if self.wav is not None else segment_audio(self.path, self.plan[i])
        return Example(audio, self.src, self.tgt, self.task)


class Batcher:
    """Decodes the segments of all waiting requests in batches on one thread, round-robin over requests."""

    def __init__(self, translator, max_wait_ms: float = 20.0, max_queue: int = 64):
        self.translator = translator
        self.decode = translator.decode_config()
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.active: collections.OrderedDict[int, Job] = collections.OrderedDict()
        self.cond = threading.Condition()
        self.ids = itertools.count()
        self.batches_run = 0
        self.seconds_per_batch = 1.0  # running estimate, for Retry-After
        self._stop = False
        self.thread = threading.Thread(target=self._loop, name="llast-batcher", daemon=True)
        self.thread.start()

    def pending_segments(self) -> int:
        return sum(len(j.plan) - j.next for j in self.active.values())

    def submit(self, job: Job) -> Future:
        with self.cond:
            if len(self.active) >= self.max_queue:
                wait = math.ceil(self.seconds_per_batch * (1 + self.pending_segments() / self.decode.batch_size))
                raise RequestError(503, f"server busy: {len(self.active)} requests are waiting; retry later",
                                   headers={"Retry-After": str(min(max(wait, 1), 600))})
            job.texts = [""] * len(job.plan)
            if not job.plan:
                job.future.set_result([])
                return job.future
            self.active[next(self.ids)] = job
            self.cond.notify()
        return job.future

    def cancel(self, job: Job) -> None:
        with self.cond:
            job.cancelled = True

    def stop(self) -> None:
        with self.cond:
            self._stop = True
            self.cond.notify()

    def _take(self) -> list[tuple[Job, int]]:
        """Up to batch_size segments, one from each request in turn (the oldest request first)."""
        with self.cond:
            for key in [k for k, j in self.active.items() if j.cancelled]:
                del self.active[key]
            jobs, batch = list(self.active.values()), []
            while len(batch) < self.decode.batch_size:
                ready = [j for j in jobs if j.next < len(j.plan)]
                if not ready:
                    break
                for j in ready[: self.decode.batch_size - len(batch)]:
                    batch.append((j, j.next))
                    j.next += 1
            return batch

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self._stop and not any(j.next < len(j.plan) for j in self.active.values()):
                    self.cond.wait()
                if self._stop:
                    return
                deadline = time.monotonic() + self.max_wait  # let concurrent requests join this batch
                while not self._stop and self.pending_segments() < self.decode.batch_size and time.monotonic() < deadline:
                    self.cond.wait(deadline - time.monotonic())
            batch = self._take()
            if batch:
                t0 = time.monotonic()
                self._run(batch)
                self.seconds_per_batch = 0.8 * self.seconds_per_batch + 0.2 * (time.monotonic() - t0)

    def _run(self, batch: list[tuple[Job, int]]) -> None:
        items, examples = [], []
        for job, i in batch:
            try:
                examples.append(job.example(i))
                items.append((job, i))
            except Exception as e:  # noqa: BLE001 - unreadable segment: that request fails alone
                self._fail(job, e)
        if not items:
            return
        try:
            texts = self.translator.generate(examples, self.decode)
        except Exception:  # noqa: BLE001 - find the culprit: decode one by one, so the others still succeed
            texts = []
            for (job, _), ex in zip(items, examples):
                try:
                    texts.append(self.translator.generate([ex], self.decode)[0])
                except Exception as e:  # noqa: BLE001
                    self._fail(job, e)
                    texts.append(None)
        self.batches_run += 1
        for (job, i), text in zip(items, texts):
            if text is None or job.future.done() or job.cancelled:
                continue
            job.texts[i] = text
            job.done += 1
            if job.done == len(job.plan):
                self._finish(job, None)

    def _fail(self, job: Job, error: Exception) -> None:
        if not job.future.done():
            self._finish(job, error)

    def _finish(self, job: Job, error: Exception | None) -> None:
        with self.cond:
            for key in [k for k, j in self.active.items() if j is job]:
                del self.active[key]
        try:
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result([Segment(s.start, s.end, t) for s, t in zip(job.plan, job.texts)])
        except InvalidStateError:  # cancelled: the client went away
            pass


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
        headers = dict(scope.get("headers") or [])
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
        except Exception:
            if not state["failed"]:
                raise
        if state["failed"] and not state["started"]:
            await self._reply(send, *state["failed"])

    @staticmethod
    async def _reply(send, status: int, message: str) -> None:
        import json

        body = json.dumps(_error_body(message)).encode()
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
              cancel: threading.Event) -> Job:
    """Read and segment an uploaded file (runs in a worker thread): a Job, or RequestError for bad audio.
    Setting `cancel` stops the segmentation of a long file (InterruptedError)."""
    try:
        seconds = audio_duration(path)
        if seconds > opts.max_audio_seconds:
            raise RequestError(413, f"audio of {seconds:.0f} s is over the limit of {opts.max_audio_seconds:g} s", "file")
        plan = plan_segments(path, seg_opts, max_samples=opts.max_input_samples, cancel=cancel)
        if len(plan) == 1 and plan[0].start == 0.0:  # within the model's limit: decoded as one clip
            wav = load_audio(path, max_samples=opts.max_input_samples)
            return Job(src, tgt, task, plan, wav=wav, seconds=seconds)
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
    path = await run_in_threadpool(_save_upload, file, ctx["max_bytes"])
    cancel, job, segments = threading.Event(), None, None
    ctx["requests"].add(cancel)
    try:
        planning = asyncio.ensure_future(run_in_threadpool(_planned, ctx, path, src, tgt, task, ctx["seg_opts"], opts, cancel))
        if await _until_done(request, planning):
            job = planning.result()
            if await _until_done(request, asyncio.wrap_future(batcher.submit(job))):
                segments = job.future.result()
    except AudioError as e:
        raise RequestError(400, str(e).replace(path, "uploaded file"), "file") from None
    except Exception as e:
        if isinstance(e, RequestError):
            raise
        log.error("%s %s: decoding failed: %s", request.client, request.url.path, e)
        raise RequestError(500, f"decoding failed: {e}", kind="server_error") from None
    finally:
        cancel.set()  # stops a segmentation still running for a client that has gone
        if job is not None and segments is None:
            batcher.cancel(job)
        ctx["requests"].discard(cancel)
        os.unlink(path)  # a segmentation still reading it keeps its open handle
    if segments is None:
        log.info("%s %s: client disconnected; its work is dropped", request.client, request.url.path)
        return JSONResponse(_error_body("client disconnected"), status_code=499)
    log.info("%s %s model=%s src=%s format=%s: %d segments, %.1f s of audio, %.2f s",
             request.client, request.url.path, model, src, response_format, len(segments), job.seconds, time.monotonic() - t0)
    return _response(segments, response_format, task, src, job.seconds)


def create_app(translator, opts: ServeOptions | None = None, seg_opts: SegmentOptions | None = None):
    """The ASGI application: FastAPI around `translator` (llast.decode.Translator), inside BodyLimits.
    The FastAPI app and its Batcher are the result's `.fastapi` and `.batcher`."""
    opts = opts or ServeOptions()
    seg_opts = seg_opts or translator.segment_options()
    batcher = Batcher(translator, opts.max_wait_ms, opts.max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.stop()

    app = FastAPI(title="llast", description=__doc__.split("\n\n")[0], version="1", lifespan=lifespan)
    max_bytes = int(opts.max_upload_mb * 1024 * 1024)
    ctx = {"opts": opts, "seg_opts": seg_opts, "batcher": batcher, "max_bytes": max_bytes,
           "requests": set(), "planning": 0, "lock": threading.Lock()}

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
                "pending_segments": batcher.pending_segments()}

    from llast.realtime import add_live_routes

    add_live_routes(app, ctx)

    # The multipart envelope around the file is allowed 64 KiB on top of the file's limit.
    wrapped = BodyLimits(app, max_bytes + 64 * 1024, opts.read_timeout, opts.api_key)
    wrapped.fastapi, wrapped.batcher, wrapped.ctx = app, batcher, ctx
    return wrapped


class Server:
    """uvicorn serving `create_app(...)` on host:port (port 0: a free port), in this thread or a background one."""

    def __init__(self, translator, host: str = "127.0.0.1", port: int = 8000, opts: ServeOptions | None = None,
                 seg_opts: SegmentOptions | None = None, max_connections: int = 256, log_level: str = "info"):
        import socket

        import uvicorn

        self.app = create_app(translator, opts, seg_opts)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level=log_level, lifespan="on",
            timeout_keep_alive=5,  # idle keep-alive connections are closed after 5 s
            limit_concurrency=max_connections,  # connections + requests in flight; beyond: 503
            h11_max_incomplete_event_size=64 * 1024,  # request line + headers
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
