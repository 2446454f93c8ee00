"""Live translation: audio blocks in as they are spoken, each speech segment's translation out as it ends.

    for seg in translator.translate_stream(blocks, src="fr"):   # blocks: (S,) float32 arrays at 16 kHz
        print(seg.start, seg.end, seg.text)                      # Segment(0.42, 3.91, "Hello."), ...

`LiveSegmenter` runs Silero VAD frame by frame (one model per stream: it carries recurrent state) and
applies, frame by frame, the rule that llast.segment applies to a whole file (silero's
get_speech_timestamps_from_probs, then equal cuts of what is still over `max_seconds`): a stream cut
here gives the same segments as `llast.segment.segment` gives for the same audio read as a file. A
segment is handed out as soon as no later frame can change it: `min_silence` after the speech stops
(or at once when it reaches `max_seconds`, so a speaker who never pauses still gets output). Memory is
bounded by the audio of the segment still open (at most max_seconds + min_silence + 2 pad), not by the
length of the stream.

`pcm16_to_float` converts raw little-endian PCM16 (stdin, WebSocket) to float samples.
"""

from __future__ import annotations

import copy
import math
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from llast.audio import MIN_SAMPLES, SAMPLE_RATE
from llast.errors import AudioError
from llast.processor import Example
from llast.segment import WINDOW, Segment, SegmentOptions, _silero

MIN_SILENCE_AT_MAX_MS = 98  # get_speech_timestamps_from_probs' default: pauses shorter than this are no cut points


def pcm16_to_float(data: bytes, where: str = "audio") -> np.ndarray:
    """(S,) float32 in [-1, 1) from little-endian signed 16-bit mono PCM bytes (an even number of them)."""
    if len(data) % 2:
        raise AudioError(f"{where}: {len(data)} bytes is not a whole number of 16-bit samples (expected PCM16 mono)")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


@dataclass
class _Span:
    """A speech span in samples from the start of the stream, before padding (`end` None while open)."""

    start: int
    end: int | None = None


class SpeechSpans:
    """get_speech_timestamps_from_probs (silero-vad, use_max_poss_sil_at_max_speech) one frame at a time:
    `push(prob)` returns the spans that frame closes, `finish(n_samples)` the one still open at the end.
    Spans are raw (unpadded) sample positions, exactly as the library's loop finds them."""

    def __init__(self, opts: SegmentOptions):
        sr = SAMPLE_RATE
        # The same integer-millisecond options that llast.segment.segments_from_probs passes to the library.
        self.pad = sr * int(opts.pad * 1000) / 1000
        self.min_speech = sr * int(opts.min_speech * 1000) / 1000
        self.min_silence = sr * int(opts.min_silence * 1000) / 1000
        self.max_speech = sr * opts.max_seconds - WINDOW - 2 * self.pad
        self.min_silence_at_max = sr * MIN_SILENCE_AT_MAX_MS / 1000
        self.threshold = opts.threshold
        self.neg_threshold = max(opts.threshold - 0.15, 0.01)
        self.frame = 0
        self.triggered = False
        self.current: dict = {}
        self.temp_end = self.prev_end = self.next_start = 0
        self.possible_ends: list[tuple[int, int]] = []

    def push(self, prob: float) -> list[tuple[int, int]]:
        """Feed the next frame's speech probability; the (start, end) spans it closes."""
        out = []
        cur = WINDOW * self.frame
        self.frame += 1
        if prob >= self.threshold and self.temp_end:
            sil = cur - self.temp_end
            if sil > self.min_silence_at_max:
                self.possible_ends.append((self.temp_end, sil))
            self.temp_end = 0
            if self.next_start < self.prev_end:
                self.next_start = cur
        if prob >= self.threshold and not self.triggered:
            self.triggered = True
            self.current["start"] = cur
            return out
        if self.triggered and cur - self.current["start"] > self.max_speech:
            if self.possible_ends:  # cut at the longest pause so far
                self.prev_end, dur = max(self.possible_ends, key=lambda x: x[1])
                out.append((self.current["start"], self.prev_end))
                self.current = {}
                self.next_start = self.prev_end + dur
                if self.next_start < self.prev_end + cur:
                    self.current["start"] = self.next_start
                else:
                    self.triggered = False
            else:  # no pause at all: cut here
                out.append((self.current["start"], cur))
                self.current = {}
                self.triggered = False
                self.prev_end = self.next_start = self.temp_end = 0
                self.possible_ends = []
                return out
            self.prev_end = self.next_start = self.temp_end = 0
            self.possible_ends = []
        if prob < self.neg_threshold and self.triggered:
            if not self.temp_end:
                self.temp_end = cur
            if cur - self.temp_end < self.min_silence:
                return out
            if self.temp_end - self.current["start"] > self.min_speech:
                out.append((self.current["start"], self.temp_end))
            self.current = {}
            self.prev_end = self.next_start = self.temp_end = 0
            self.triggered = False
            self.possible_ends = []
        return out

    def open_start(self) -> int | None:
        """Start (samples) of the span being spoken, if any."""
        return self.current.get("start")

    def kept_start(self) -> int | None:
        """Start of the span being spoken if it is sure to be kept (it cannot end up under min_speech)."""
        start = self.current.get("start")
        if start is None:
            return None
        end = self.temp_end or WINDOW * self.frame  # the earliest end it can still get
        return start if end - start > self.min_speech else None

    def finish(self, n_samples: int) -> list[tuple[int, int]]:
        """The span still open when the audio ends after `n_samples`, if long enough; none is open after."""
        current, self.current, self.triggered = self.current, {}, False
        if current and n_samples - current["start"] > self.min_speech:
            return [(current["start"], n_samples)]
        return []


class LiveSegmenter:
    """Speech segments of a 16 kHz stream given in blocks, each with its audio, as soon as each is final.

        seg = LiveSegmenter(opts)
        for block in blocks:
            for segment, audio in seg.push(block): ...   # Segment(start, end) in s; audio (S,) float32
        for segment, audio in seg.flush(): ...           # end of the audio: the open segment closes

    The segments are those of llast.segment.segment(whole audio, opts). After `flush` the stream may go
    on: later segments are timed from the same origin, segmented as a new recording starting there.
    """

    def __init__(self, opts: SegmentOptions, model=None):
        self.opts = opts
        self.model = model if model is not None else new_vad_model()
        self.origin = 0  # samples before the current recording (earlier flushes)
        self._start_recording()

    def _start_recording(self) -> None:
        self.model.reset_states()
        self.spans = SpeechSpans(self.opts)
        self.n = 0  # samples of this recording received
        self.rest = np.zeros(0, np.float32)  # samples after the last whole frame
        self.audio = np.zeros(0, np.float32)  # kept samples, from sample self.kept_from of this recording
        self.kept_from = 0
        self.closed: list[_Span] = []  # raw spans closed and not yet handed out (their padding may change)
        self.prev_end: int | None = None  # raw end of the last span handed out

    @property
    def seconds(self) -> float:
        """Stream time received so far (s)."""
        return (self.origin + self.n) / SAMPLE_RATE

    @property
    def buffered_seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @torch.inference_mode()
    def push(self, block) -> list[tuple[Segment, np.ndarray]]:
        """Feed the next block, (S,) float32 at 16 kHz; the segments that became final."""
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 1 or not np.isfinite(block).all():
            raise AudioError(f"stream block: expected finite mono 16 kHz samples of shape (S,), got shape {block.shape}")
        self.n += len(block)
        self.audio = np.concatenate([self.audio, block])
        x = np.concatenate([self.rest, block]) if len(self.rest) else block
        k = len(x) // WINDOW * WINDOW
        frames = torch.from_numpy(np.ascontiguousarray(x[:k])).view(-1, 1, WINDOW)
        for f in frames:
            for start, end in self.spans.push(self.model(f, SAMPLE_RATE).item()):
                self.closed.append(_Span(start, end))
        self.rest = x[k:].copy()
        out = self._ready(final=False)
        self._trim()
        return out

    @torch.inference_mode()
    def flush(self) -> list[tuple[Segment, np.ndarray]]:
        """The audio ends here: every remaining segment, then a new recording starts (same time origin)."""
        if len(self.rest):
            last = torch.from_numpy(np.pad(self.rest, (0, WINDOW - len(self.rest))))[None]
            for start, end in self.spans.push(self.model(last, SAMPLE_RATE).item()):
                self.closed.append(_Span(start, end))
        self.closed.extend(_Span(s, e) for s, e in self.spans.finish(self.n))
        out = self._ready(final=True)
        self.origin += self.n
        self._start_recording()
        return out

    def tentative(self, after: float | None = None) -> list[tuple[Segment, np.ndarray]]:
        """The segments `push` would hand out if the rest of the stream were silence, once the speech has been
        quiet for `after` seconds (default: the padding, whose audio a segment's end needs); [] otherwise.

        Decoding these ahead of time (speculation) saves most of `min_silence` of latency: when the pause
        goes on, the segments `push` later hands out are these ones, with the same samples; when the speaker
        goes on, they are dropped. Nothing of the segmenter changes (a copy of its state plays the silence)."""
        spans = self.spans
        if not spans.triggered or not spans.temp_end:
            return []
        quiet = WINDOW * spans.frame - spans.temp_end
        if quiet < (spans.pad if after is None else after * SAMPLE_RATE) or self.n < spans.temp_end + spans.pad:
            return []
        twin = copy.copy(self)  # shares the audio (read only here); its own span state and list of closed spans
        twin.spans, twin.closed = copy.deepcopy(spans), list(self.closed)
        out = []
        for _ in range(math.ceil((spans.min_silence + 2 * spans.pad) / WINDOW) + 2):
            twin.closed.extend(_Span(s, e) for s, e in twin.spans.push(0.0))
            out.extend(twin._ready(final=False))
            if not twin.spans.triggered and not twin.closed:
                break
        return out

    def clear(self) -> None:
        """Drop the audio not yet handed out (a new recording starts here, same time origin)."""
        self.origin += self.n
        self._start_recording()

    def _ready(self, final: bool) -> list[tuple[Segment, np.ndarray]]:
        """Hand out the closed spans whose padded bounds no later frame can change (all if `final`)."""
        pad, out = self.spans.pad, []
        seen = WINDOW * self.spans.frame  # later spans start at or after this sample
        while self.closed:
            span = self.closed[0]
            nxt = self.closed[1].start if len(self.closed) > 1 else self.spans.kept_start()
            if nxt is None and not final:
                # The next span starts at the open one (if it is kept) or at a later frame: if that could be
                # within 2 pad, the two would share the pause, so wait.
                earliest = self.spans.open_start()
                if (seen if earliest is None else earliest) - span.end < 2 * pad:
                    break
            start, end = self._padded(span, nxt)
            self.prev_end = span.end
            self.closed.pop(0)
            out.extend((seg, self._slice(seg)) for seg in self._cut(start, end))
        return out

    def _padded(self, span: _Span, nxt: int | None) -> tuple[int, int]:
        """The padding pass of get_speech_timestamps_from_probs for one span (samples of this recording);
        `nxt`: the next span's raw start, None if there is none within 2 pad."""
        pad = self.spans.pad
        if self.prev_end is None:
            start = int(max(0, span.start - pad))
        else:
            gap = span.start - self.prev_end
            start = int(max(0, span.start - gap // 2)) if gap < 2 * pad else int(max(0, span.start - pad))
        if nxt is not None and nxt - span.end < 2 * pad:
            end = span.end + int((nxt - span.end) // 2)
        else:
            end = int(min(self.n, span.end + pad))
        return start, end

    def _cut(self, start: int, end: int) -> list[Segment]:
        """As llast.segment.segments_from_probs: seconds from the stream's origin, equal parts of at most max_seconds."""
        a, b = (self.origin + start) / SAMPLE_RATE, (self.origin + end) / SAMPLE_RATE
        parts = max(1, math.ceil((b - a) / self.opts.max_seconds - 1e-9))
        step = (b - a) / parts
        return [Segment(round(a + i * step, 3), round(a + (i + 1) * step, 3)) for i in range(parts)]

    def _slice(self, seg: Segment) -> np.ndarray:
        """The segment's samples (as llast.segment.segment_audio slices an array)."""
        a = int(round(seg.start * SAMPLE_RATE)) - self.origin - self.kept_from
        b = int(round(seg.end * SAMPLE_RATE)) - self.origin - self.kept_from
        return self.audio[max(a, 0) : max(b, 0)].copy()

    def _trim(self) -> None:
        """Drop the samples no segment can still need: before the earliest pending span's padded start."""
        reach = int(math.ceil(self.spans.pad)) + 64  # padding, and the rounding of times to the millisecond
        starts = [WINDOW * self.spans.frame] + [s.start for s in self.closed[:1]]  # the next frame may start one
        if self.spans.open_start() is not None:
            starts.append(self.spans.open_start())
        drop = min(starts) - reach - self.kept_from
        if drop > 0:
            self.audio = self.audio[drop:].copy()
            self.kept_from += drop


def new_vad_model():
    """A Silero VAD model of its own (a stream's recurrent state is its own)."""
    threads = torch.get_num_threads()
    model = _silero().load_silero_vad(onnx=False)
    torch.set_num_threads(threads)
    return model


def blocks_of(wav: np.ndarray, seconds: float = 0.1) -> Iterator[np.ndarray]:
    """A (S,) array as a stream of blocks of `seconds` (what a microphone or a pipe delivers)."""
    step = max(1, int(seconds * SAMPLE_RATE))
    for i in range(0, len(wav), step):
        yield wav[i : i + step]


def translate_stream(translator, blocks: Iterable[np.ndarray], src: str, tgt: str, task: str,
                     opts: SegmentOptions, decode, speculate: bool = True) -> Iterator[Segment]:
    """Each segment of the stream with its text, as soon as it ends (Translator.translate_stream).
    `speculate`: decode a segment as soon as its speech has paused for the padding (LiveSegmenter.tentative),
    and give that text when the segment closes with the same bounds; decoding the same samples gives the
    same text, so only the latency changes (by up to min_silence - pad), at the cost of a wasted decoding
    when the speaker goes on after a short pause."""

    segmenter = LiveSegmenter(opts)
    ahead: dict[tuple[float, float], str] = {}  # texts decoded ahead, by (start, end)

    def text(seg, wav):
        if len(wav) < MIN_SAMPLES:  # too short for the encoder (a last sliver): no text
            return None
        return translator.generate([Example(wav, src, tgt, task)], decode)[0]

    def decoded(ready):
        for seg, wav in ready:
            key = (seg.start, seg.end)
            said = ahead.pop(key) if key in ahead else text(seg, wav)
            yield seg if said is None else Segment(seg.start, seg.end, said)
        if ready:
            ahead.clear()  # what was decoded ahead of a segment that closed otherwise

    for block in blocks:
        ready = segmenter.push(block)
        yield from decoded(ready)
        if speculate and not ready:
            guess = segmenter.tentative()
            keys = {(seg.start, seg.end) for seg, _ in guess}
            for key in [k for k in ahead if k not in keys]:  # the speaker went on: those segments will not come
                del ahead[key]
            for seg, wav in guess:
                if (seg.start, seg.end) not in ahead:
                    ahead[(seg.start, seg.end)] = text(seg, wav)
    yield from decoded(segmenter.flush())


def pcm_blocks(stream, seconds: float = 0.1) -> Iterator[np.ndarray]:
    """Blocks of raw 16 kHz mono PCM16 (little-endian) read from a binary `stream` (stdin) until it ends."""
    size = 2 * max(1, int(seconds * SAMPLE_RATE))
    carry = b""
    while True:
        data = stream.read(size)
        if not data:
            break
        data, carry = carry + data, b""
        if len(data) % 2:
            data, carry = data[:-1], data[-1:]
        yield pcm16_to_float(data)
    if carry:
        raise AudioError(f"PCM input: it ended inside a sample ({len(carry)} stray byte); expected 16-bit samples")


def check_microphone():
    """The sounddevice module, if there is a default input device; else AudioError saying what to do."""
    try:
        import sounddevice as sd  # lazy: needs PortAudio (a system library); only microphone input needs it
    except (ImportError, OSError) as e:
        raise AudioError(f"microphone: sounddevice/PortAudio is not usable ({e}); install Debian libportaudio2, "
                         "or pipe raw 16 kHz PCM16 into `llast translate --live -`") from None
    try:
        sd.query_devices(kind="input")
    except Exception as e:  # noqa: BLE001 - PortAudioError / ValueError: no input device
        raise AudioError(f"microphone: no default input device ({e}); pipe raw 16 kHz PCM16 into "
                         "`llast translate --live -` instead") from None
    return sd


def microphone_blocks(seconds: float = 0.1, backlog_seconds: float = 120.0) -> Iterator[np.ndarray]:
    """Blocks of 16 kHz mono audio from the default input device (sounddevice / PortAudio), until Ctrl-C
    (which ends the stream: the segment being spoken is still translated). Blocks the consumer has not
    taken within `backlog_seconds` are dropped, with a warning, so memory stays bounded."""

    sd = check_microphone()
    blocks: queue.Queue = queue.Queue(maxsize=max(1, int(backlog_seconds / seconds)))
    dropped = [0]

    def callback(indata, frames, time_info, status):
        try:
            blocks.put_nowait(indata[:, 0].copy())
        except queue.Full:
            dropped[0] += 1

    try:
        stream = sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32",
                                blocksize=int(seconds * SAMPLE_RATE), callback=callback)
    except Exception as e:  # noqa: BLE001 - PortAudioError, no device, unsupported rate
        raise AudioError(f"microphone: cannot open the default input device ({e})") from None
    with stream:
        print("llast: listening on the default microphone (Ctrl-C ends)", file=sys.stderr, flush=True)
        try:
            while True:
                if dropped[0]:
                    print(f"llast: translation is behind the microphone: {dropped[0] * seconds:.1f} s of audio "
                          "dropped", file=sys.stderr, flush=True)
                    dropped[0] = 0
                yield blocks.get()
        except KeyboardInterrupt:
            return


def prefetched(blocks: Iterable[np.ndarray], max_blocks: int = 600) -> Iterator[np.ndarray]:
    """`blocks`, read ahead on a thread into a queue of at most `max_blocks`: a source (a pipe) keeps being
    read while a segment is decoded; when the queue is full the source waits (back-pressure)."""

    q: queue.Queue = queue.Queue(maxsize=max_blocks)
    end = object()

    def read():
        try:
            for block in blocks:
                q.put(block)
            q.put(end)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            q.put(e)

    threading.Thread(target=read, name="llast-live-reader", daemon=True).start()
    while True:
        item = q.get()
        if item is end:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
