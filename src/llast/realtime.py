"""Live translation in `llast serve`: the WebSocket /v1/realtime and the page at /.

    ws://127.0.0.1:8000/v1/realtime?intent=transcription      (events below, JSON text frames)
    GET /            the live page (src/llast/web/): microphone or file in, segments as they end, SRT out

The events follow OpenAI's Realtime API transcription sessions where they fit (docs/live.md):

    client  transcription_session.update   {"session": {"input_audio_format": "pcm16",
                                              "input_audio_transcription": {"language": "fr"},
                                              "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                                 "prefix_padding_ms": 200, "silence_duration_ms": 500}}}
            input_audio_buffer.append       {"audio": base64 of little-endian PCM16 mono}
            input_audio_buffer.commit       the audio so far ends: the segment being spoken closes
            input_audio_buffer.clear        drop the audio of the segment not yet closed
    server  transcription_session.created / .updated   {"session": {...}}
            input_audio_buffer.committed    {"item_id", "previous_item_id", "audio_start_ms", "audio_end_ms"}
            conversation.item.input_audio_transcription.completed
                                            {"item_id", "content_index": 0, "transcript", "start", "end"}
            conversation.item.input_audio_transcription.failed   {"item_id", "error"}
            input_audio_buffer.cleared
            llast.commit.done               {"item_ids"}: every segment the commit closed has been announced
            error                           {"error": {"type", "code", "message", "param", "event_id"}}

Differences, and why: the transcript is the TRANSLATION into the session's target language (the server's
--tgt; "task": "transcribe" for a transcript); audio is 16 kHz by default (llast's rate; OpenAI's pcm16 is
24 kHz: set "input_audio_rate": 24000, any rate from 8 to 48 kHz is resampled); segments are cut by Silero
VAD exactly as `llast translate` cuts a file (turn_detection maps to SegmentOptions: threshold,
prefix_padding_ms = pad, silence_duration_ms = min_silence; "max_segment_ms" caps a segment), and
`start`/`end` (seconds from the start of the stream) come with each transcript.

Limits: the server's API key ("Authorization: Bearer KEY", or the subprotocol
"openai-insecure-api-key.KEY" that browsers use, as with OpenAI); at most ServeOptions.max_streams
streams (one more gets an error event and close code 1013); a client that sends nothing for
read_timeout seconds while no result is due is closed; at most MAX_PENDING segments of a stream are
decoding at once, past that the server stops reading the socket (TCP back-pressure), so memory stays
bounded however fast audio comes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import itertools
import json
import logging
import secrets
import time
import uuid
from pathlib import Path

import numpy as np
import soxr
from fastapi import WebSocket
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from llast.audio import MIN_SAMPLES, SAMPLE_RATE
from llast.batcher import Job, RequestError
from llast.errors import LlastError
from llast.live import LiveSegmenter, new_vad_model, pcm16_to_float
from llast.processor import language_name
from llast.segment import Segment

log = logging.getLogger("llast.serve")

WEB_DIR = Path(__file__).parent / "web"
MAX_PENDING = 4  # segments of one stream being decoded at once; past that the socket is not read
SESSION_KEYS = {"input_audio_format", "input_audio_rate", "input_audio_transcription", "turn_detection", "task",
                "target_language", "input_audio_noise_reduction", "include", "modalities"}


class EventError(Exception):
    """A bad client event: answered with an `error` event; the stream goes on."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.param = code, param


class Stream:
    """One WebSocket's session: its settings, its segmenter, and its segments in flight (in order)."""

    def __init__(self, ws: WebSocket, ctx: dict):
        self.ws, self.ctx = ws, ctx
        opts = ctx["opts"]
        self.src, self.tgt, self.task = opts.default_src, opts.tgt, "translate"
        self.rate = SAMPLE_RATE
        self.seg_opts = ctx["seg_opts"]
        self.segmenter: LiveSegmenter | None = None
        self.resampler = None
        self.id = f"sess_{uuid.uuid4().hex[:16]}"
        self.items = itertools.count(1)
        self.last_item: str | None = None
        self.events = itertools.count(1)
        self.inflight: collections.deque = collections.deque()  # (item_id, Segment, Job | None), in order
        self.ahead: dict[tuple[float, float], Job] = {}  # segments decoding before they close (speculation)
        self.changed = asyncio.Event()
        self.last_activity = time.monotonic()
        self.send_lock = asyncio.Lock()
        self.gone = False  # set when results can no longer be sent

    async def send(self, event: dict) -> None:
        async with self.send_lock:
            await self.ws.send_text(json.dumps({"event_id": f"event_{next(self.events)}", **event}, ensure_ascii=False))

    async def error(self, code: str, message: str, param: str | None = None, client_event: str | None = None,
                    kind: str = "invalid_request_error") -> None:
        await self.send({"type": "error", "error": {"type": kind, "code": code, "message": message, "param": param,
                                                    "event_id": client_event}})

    def session(self) -> dict:
        o = self.seg_opts
        return {
            "id": self.id, "object": "realtime.transcription_session", "input_audio_format": "pcm16",
            "input_audio_rate": self.rate, "task": self.task, "target_language": self.tgt,
            "input_audio_transcription": {"model": self.ctx["opts"].model_name, "language": self.src, "prompt": ""},
            "turn_detection": {"type": "server_vad", "threshold": o.threshold, "prefix_padding_ms": round(o.pad * 1000),
                               "silence_duration_ms": round(o.min_silence * 1000),
                               "max_segment_ms": round(o.max_seconds * 1000)},
        }

    def update(self, session) -> None:
        """transcription_session.update: check every field first, then apply them all."""
        if self.segmenter is not None:
            raise EventError("session_fixed", "the session cannot change once audio has been sent; open a new stream")
        if not isinstance(session, dict):
            raise EventError("invalid_value", "session: expected an object", "session")
        unknown = sorted(set(session) - SESSION_KEYS)
        if unknown:
            raise EventError("unknown_parameter", f"session.{unknown[0]}: unknown field", f"session.{unknown[0]}")
        fmt = session.get("input_audio_format", "pcm16")
        if fmt != "pcm16":
            raise EventError("unsupported_audio_format", f"session.input_audio_format: {fmt!r} is not supported "
                             "(llast takes pcm16: little-endian signed 16-bit mono)", "session.input_audio_format")
        rate = session.get("input_audio_rate", self.rate)
        if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 48000:
            raise EventError("invalid_value", f"session.input_audio_rate: {rate!r} is not a sample rate from 8000 to "
                             "48000 Hz", "session.input_audio_rate")
        task = session.get("task", self.task)
        if task not in ("translate", "transcribe"):
            raise EventError("invalid_value", f"session.task: {task!r} is not one of translate, transcribe", "session.task")
        transcription = session.get("input_audio_transcription") or {}
        if not isinstance(transcription, dict):
            raise EventError("invalid_value", "session.input_audio_transcription: expected an object",
                             "session.input_audio_transcription")
        src = transcription.get("language", self.src)
        tgt = session.get("target_language", self.tgt)
        for name, lang in (("input_audio_transcription.language", src), ("target_language", tgt)):
            if lang is not None:
                try:
                    language_name(lang)
                except (LlastError, TypeError) as e:
                    raise EventError("invalid_value", f"session.{name}: {e}", f"session.{name}") from None
        seg_opts = self.seg_opts
        turn = session.get("turn_detection", {})
        if turn is not None and not isinstance(turn, dict):
            raise EventError("invalid_value", "session.turn_detection: expected an object", "session.turn_detection")
        if turn is None or turn.get("type", "server_vad") != "server_vad":
            raise EventError("unsupported_turn_detection", "session.turn_detection: llast segments with server_vad "
                             "(Silero VAD); other turn detection is not supported", "session.turn_detection")
        fields = {"threshold": ("threshold", 1), "prefix_padding_ms": ("pad", 1000),
                  "silence_duration_ms": ("min_silence", 1000), "max_segment_ms": ("max_seconds", 1000)}
        changes = {}
        for key, (name, scale) in fields.items():
            if key in turn:
                value = turn[key]
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise EventError("invalid_value", f"session.turn_detection.{key}: expected a number",
                                     f"session.turn_detection.{key}")
                changes[name] = value / scale
        if changes.get("max_seconds", 0) > self.ctx["seg_opts"].max_seconds:
            raise EventError("invalid_value", f"session.turn_detection.max_segment_ms: over the model's limit of "
                             f"{self.ctx['seg_opts'].max_seconds * 1000:g}", "session.turn_detection.max_segment_ms")
        if changes:
            try:
                seg_opts = seg_opts.replace(**changes)
            except LlastError as e:
                raise EventError("invalid_value", f"session.turn_detection: {e}", "session.turn_detection") from None
        self.rate, self.task, self.src, self.tgt, self.seg_opts = rate, task, src, tgt, seg_opts

    def samples(self, event: dict) -> np.ndarray:
        """input_audio_buffer.append: its audio as (S,) float32 at 16 kHz."""
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise EventError("invalid_value", "audio: expected a base64 string of PCM16 audio", "audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise EventError("invalid_audio", "audio: not valid base64", "audio") from None
        try:
            wav = pcm16_to_float(data, "audio")
        except LlastError as e:
            raise EventError("invalid_audio", str(e), "audio") from None
        if self.rate != SAMPLE_RATE:
            if self.resampler is None:

                self.resampler = soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32")
            wav = self.resampler.resample_chunk(wav)
        return wav

    async def segmenter_(self) -> LiveSegmenter:
        if self.segmenter is None:
            if self.src is None:
                raise EventError("missing_language", "the source language is not set: send transcription_session.update "
                                 "with session.input_audio_transcription.language first (this server has no --default-src)",
                                 "session.input_audio_transcription.language")
            self.segmenter = LiveSegmenter(self.seg_opts, await run_in_threadpool(new_vad_model))
        return self.segmenter

    async def closed(self, ready) -> list[str]:
        """Announce and submit the segments the segmenter handed out; their item ids."""
        ids = []
        for seg, wav in ready:
            item = f"item_{next(self.items):06d}"
            await self.send({"type": "input_audio_buffer.committed", "previous_item_id": self.last_item, "item_id": item,
                             "audio_start_ms": round(seg.start * 1000), "audio_end_ms": round(seg.end * 1000)})
            self.last_item = item
            ids.append(item)
            job = self.ahead.pop((seg.start, seg.end), None)  # decoded ahead: the same samples
            self.ctx["ahead"]["used"] += job is not None
            if job is None and len(wav) >= MIN_SAMPLES:  # a sliver under the encoder's minimum: an empty transcript
                job = self._job(wav)
                while True:
                    try:
                        self.ctx["batcher"].reserve()  # a place in the server's queue, as an upload takes
                        break
                    except RequestError:  # the server's queue is full: wait, this stream's reading waits with it
                        await asyncio.sleep(0.2)
                self.ctx["batcher"].submit(job)
            self.inflight.append((item, seg, job))
            self.changed.set()
        if ready:
            self.drop_ahead(set())
        return ids

    def _job(self, wav: np.ndarray) -> Job:
        return Job(self.src, self.tgt if self.task == "translate" else self.src, self.task,
                   [Segment(0.0, len(wav) / SAMPLE_RATE)], wav=wav, seconds=len(wav) / SAMPLE_RATE)

    def speculate(self) -> None:
        """Start decoding the segments a pause of the speech would close (LiveSegmenter.tentative), so that
        their text is ready sooner when the pause goes on; drop those the speaker went on from. Only when
        the server's queue has room: speculation never waits."""
        guess = self.segmenter.tentative()
        self.drop_ahead({(seg.start, seg.end) for seg, _ in guess})
        for seg, wav in guess:
            if (seg.start, seg.end) in self.ahead or len(wav) < MIN_SAMPLES:
                continue
            try:
                self.ctx["batcher"].reserve()
            except RequestError:
                return
            job = self._job(wav)
            self.ctx["batcher"].submit(job)
            self.ahead[(seg.start, seg.end)] = job
            self.ctx["ahead"]["started"] += 1

    def drop_ahead(self, keep: set) -> None:
        for key in [k for k in self.ahead if k not in keep]:
            self.ctx["batcher"].cancel(self.ahead.pop(key))

    async def results(self) -> None:
        """Send each segment's result as it is decoded, in stream order (a task of its own)."""
        try:
            await self._results()
        finally:  # the socket is gone (or the stream ends): nothing waits for room any more
            self.gone = True
            self.changed.set()

    async def _results(self) -> None:
        while True:
            while not self.inflight:
                self.changed.clear()
                await self.changed.wait()
            item, seg, job = self.inflight[0]
            if job is None:
                text, error = "", None
            else:
                try:
                    text, error = (await asyncio.wrap_future(job.future))[0].text, None
                except Exception as e:  # noqa: BLE001 - reported to the client as this item's failure
                    text, error = None, e
            if error is None:
                await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item,
                                 "content_index": 0, "transcript": text, "start": seg.start, "end": seg.end})
            else:
                await self.send({"type": "conversation.item.input_audio_transcription.failed", "item_id": item,
                                 "content_index": 0, "error": {"type": "server_error", "code": "decoding_failed",
                                                               "message": str(error), "param": None}})
            self.inflight.popleft()
            self.last_activity = time.monotonic()
            self.changed.set()

    async def room(self) -> None:
        """Wait until fewer than MAX_PENDING segments are in flight (back-pressure on the socket)."""
        while len(self.inflight) >= MAX_PENDING:
            if self.gone:
                raise WebSocketDisconnect(1006)
            self.changed.clear()
            await self.changed.wait()

    async def handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "transcription_session.update":
            self.update(event.get("session"))
            await self.send({"type": "transcription_session.updated", "session": self.session()})
        elif kind == "input_audio_buffer.append":
            wav = self.samples(event)
            segmenter = await self.segmenter_()
            await self.room()
            if not await self.closed(await run_in_threadpool(segmenter.push, wav)) and self.ctx["opts"].speculate:
                self.speculate()
        elif kind == "input_audio_buffer.commit":
            segmenter = await self.segmenter_()
            ids = await self.closed(await run_in_threadpool(segmenter.flush))
            await self.send({"type": "llast.commit.done", "item_ids": ids})
        elif kind == "input_audio_buffer.clear":
            if self.segmenter is not None:
                self.segmenter.clear()
            self.drop_ahead(set())
            await self.send({"type": "input_audio_buffer.cleared"})
        else:
            raise EventError("unknown_event", f"type: unknown client event {kind!r} (llast takes "
                             "transcription_session.update and input_audio_buffer.append / commit / clear)", "type")

    def cancel(self) -> None:
        for _, _, job in self.inflight:
            if job is not None:
                self.ctx["batcher"].cancel(job)
        self.inflight.clear()
        self.drop_ahead(set())


def _authorized(ws: WebSocket, key: str | None) -> bool:
    if key is None:
        return True
    header = ws.headers.get("authorization", "")
    protocols = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    offered = [p[len("openai-insecure-api-key."):] for p in protocols if p.startswith("openai-insecure-api-key.")]
    return secrets.compare_digest(header.encode(), f"Bearer {key}".encode()) or any(
        secrets.compare_digest(p.encode(), key.encode()) for p in offered)


async def realtime(ws: WebSocket, ctx: dict) -> None:
    """One live stream, from accept to close."""
    opts = ctx["opts"]
    protocols = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    await ws.accept(subprotocol="realtime" if "realtime" in protocols else None)
    stream = Stream(ws, ctx)
    if not _authorized(ws, opts.api_key):
        await stream.error("invalid_api_key", "missing or wrong API key (send 'Authorization: Bearer <key>', or the "
                           "subprotocol 'openai-insecure-api-key.<key>')", kind="authentication_error")
        return await ws.close(code=1008)
    if ctx["streams"] >= opts.max_streams:
        await stream.error("server_busy", f"{ctx['streams']} live streams are open, the server's limit (--max-streams); "
                           "retry later", kind="server_error")
        return await ws.close(code=1013)
    ctx["streams"] += 1
    results = asyncio.ensure_future(stream.results())
    receiving = None
    try:
        await stream.send({"type": "transcription_session.created", "session": stream.session()})
        while True:
            receiving = receiving or asyncio.ensure_future(ws.receive())
            done, _ = await asyncio.wait({receiving, results}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            if results in done:
                results.result()  # the results task failed: the socket is gone
            if receiving not in done:
                if not stream.inflight and time.monotonic() - stream.last_activity > opts.read_timeout:
                    await stream.error("idle_timeout", f"no audio or event for {opts.read_timeout:g} s; closing")
                    await ws.close(code=1001)
                    break
                continue
            message, receiving = receiving.result(), None
            if message["type"] == "websocket.disconnect":
                break
            stream.last_activity = time.monotonic()
            client_event = None
            try:
                if message.get("text") is None:
                    raise EventError("invalid_event", "binary frames are not events: send JSON text events "
                                     "(input_audio_buffer.append with base64 PCM16)")
                try:
                    event = json.loads(message["text"])
                except json.JSONDecodeError as e:
                    raise EventError("invalid_json", f"the event is not valid JSON ({e})") from None
                if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                    raise EventError("invalid_event", "an event is a JSON object with a string 'type'", "type")
                client_event = event.get("event_id") if isinstance(event.get("event_id"), str) else None
                await stream.handle(event)
            except EventError as e:
                await stream.error(e.code, str(e), e.param, client_event)
            except LlastError as e:  # audio the segmenter refuses
                await stream.error("invalid_audio", str(e), "audio", client_event)
    except WebSocketDisconnect:
        pass
    except Exception as e:  # noqa: BLE001 - the client went away while we were sending (or worse): logged
        log.warning("%s /v1/realtime: stream ended: %s: %s", ws.client, type(e).__name__, e)
    finally:
        ctx["streams"] -= 1
        stream.cancel()
        for task in (results, receiving):
            if task is not None:
                task.cancel()


def add_live_routes(app, ctx: dict) -> None:
    """/v1/realtime (WebSocket) and the page: / and /web/*."""
    ctx.setdefault("streams", 0)

    @app.websocket("/v1/realtime")
    async def realtime_endpoint(ws: WebSocket):
        await realtime(ws, ctx)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
