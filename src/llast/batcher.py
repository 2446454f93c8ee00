"""The server's decoding queue: requests' speech segments decoded in batches on one thread, round-robin over
requests (`Batcher`), shared by the HTTP endpoints (llast.serve) and live streams (llast.realtime)."""

from __future__ import annotations

import collections
import itertools
import math
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import numpy as np

from llast.config import DecodeConfig
from llast.processor import Example
from llast.segment import Segment, segment_audio


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

    def __init__(self, translator, max_wait_ms: float = 20.0, max_queue: int = 64, decode: DecodeConfig | None = None):
        """decode: how every batch is decoded (default: the model's own, translator.cfg.decode)."""
        self.translator = translator
        self.decode = decode or translator.cfg.decode
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.active: collections.OrderedDict[int, Job] = collections.OrderedDict()
        self.cond = threading.Condition()
        self.ids = itertools.count()
        self.batches_run = 0
        self.reserved = 0  # places taken by requests still being read or segmented
        self.seconds_per_batch = 1.0  # running estimate, for Retry-After
        self._stop = False
        self.thread = threading.Thread(target=self._loop, name="llast-batcher", daemon=True)
        self.thread.start()

    def pending_segments(self) -> int:
        return sum(len(j.plan) - j.next for j in self.active.values())

    def reserve(self) -> None:
        """Take a place in the queue for a request about to be read and segmented (before any work on
        its audio), or RequestError 503 + Retry-After if `max_queue` requests are queued or being planned."""
        with self.cond:
            if len(self.active) + self.reserved >= self.max_queue:
                wait = math.ceil(self.seconds_per_batch * (1 + self.pending_segments() / self.decode.batch_size))
                raise RequestError(503, f"server busy: {len(self.active) + self.reserved} requests are waiting; retry later",
                                   headers={"Retry-After": str(min(max(wait, 1), 600))})
            self.reserved += 1

    def release(self) -> None:
        """Give back a place taken by `reserve` whose request never reached `submit`."""
        with self.cond:
            self.reserved -= 1

    def submit(self, job: Job) -> Future:
        """Queue `job` in the place its request reserved."""
        with self.cond:
            self.reserved -= 1
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
