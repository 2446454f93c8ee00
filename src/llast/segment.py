"""Speech segmentation, the one place where long audio is cut: Silero VAD over audio read in blocks.

    plan_segments("talk.flac", SegmentOptions(max_seconds=30))  -> [Segment(0.42, 3.91), Segment(5.02, 9.87), ...]

A clip no longer than `max_seconds` is one segment covering the whole clip (the model is trained on
sentence clips: short audio is decoded as it is). Longer audio is read in blocks of BLOCK_SECONDS
(llast.audio.stream_audio), Silero VAD gives a speech probability per 32 ms frame, and the frames become
speech segments: a pause of at least `min_silence` ends a segment, `pad` seconds are kept on each side,
bursts shorter than `min_speech` are dropped, and a segment longer than `max_seconds` is cut at its
longest inner pause (Silero's rule), or into equal parts if it has none. Memory is bounded by the block
and the per-frame probabilities (4 bytes per 32 ms), not by the length of the file.

Segment audio is read back per segment (`segment_audio`), by seeking in the file.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llast.audio import MAX_INPUT_SAMPLES, SAMPLE_RATE, audio_duration, load_audio, stream_audio
from llast.errors import AudioError, ConfigError

WINDOW = 512  # samples per Silero VAD frame at 16 kHz (32 ms)
# Digital silence is not run through Silero: after QUIET_RUN frames in a row whose samples all stay below
# QUIET_LEVEL (-80 dBFS, about 3 steps of 16-bit audio), further such frames get probability 0 without
# the model. An hour of silence then costs seconds, not minutes; frames of any real recording pass.
QUIET_LEVEL = 1e-4
QUIET_RUN = 16


@dataclass(frozen=True)
class Segment:
    """A stretch of speech: `start` and `end` in seconds from the start of the audio; `text` once decoded."""

    start: float
    end: float
    text: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class SegmentOptions:
    max_seconds: float = 30.0  # longest segment (the encoder's limit, model.encoder.max_seconds)
    min_silence: float = 0.5  # a pause at least this long (s) ends a segment
    pad: float = 0.2  # seconds of audio kept before and after each segment
    min_speech: float = 0.25  # speech bursts shorter than this (s) are dropped
    threshold: float = 0.5  # Silero speech probability above which a frame is speech

    def __post_init__(self) -> None:
        checks = {
            "max_seconds": 1.0 <= self.max_seconds <= 3600,
            "min_silence": 0.0 <= self.min_silence <= 10,
            "pad": 0.0 <= self.pad <= 2,
            "min_speech": 0.0 <= self.min_speech <= 10,
            "threshold": 0.0 < self.threshold < 1,
        }
        ranges = {"max_seconds": "1 to 3600", "min_silence": "0 to 10", "pad": "0 to 2", "min_speech": "0 to 10",
                  "threshold": "strictly between 0 and 1"}
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"segment option {name}={getattr(self, name)!r} is out of range ({ranges[name]})")
        if 2 * self.pad >= self.max_seconds:
            raise ConfigError(f"segment option pad={self.pad} leaves no room in max_seconds={self.max_seconds}")

    def replace(self, **changes) -> SegmentOptions:
        return dataclasses.replace(self, **changes)


_local = threading.local()


def _silero():
    """The silero_vad module. Importing it sets torch's thread count to 1; the count is restored."""
    threads = torch.get_num_threads()
    import silero_vad  # lazy: its import sets torch's thread count to 1 (restored here); only VAD needs it

    torch.set_num_threads(threads)
    return silero_vad


def _vad_model():
    """Silero VAD (TorchScript, shipped in the wheel), one per thread: it carries recurrent state."""
    model = getattr(_local, "model", None)
    if model is None:
        threads = torch.get_num_threads()
        model = _local.model = _silero().load_silero_vad(onnx=False)
        torch.set_num_threads(threads)
    return model


@torch.inference_mode()
def speech_probs(blocks: Iterable[np.ndarray], cancel: threading.Event | None = None) -> tuple[np.ndarray, int]:
    """Speech probability of every 32 ms frame of a 16 kHz stream given in blocks. Setting `cancel`
    stops it (InterruptedError) at the next block.

    Returns (probs, n_samples): probs shape = (ceil(n_samples / WINDOW),) float32.
    """
    model = _vad_model()
    model.reset_states()
    probs: list[float] = []
    rest = np.zeros(0, np.float32)
    n = 0
    quiet_run = 0
    for block in blocks:
        if cancel is not None and cancel.is_set():
            raise InterruptedError("segmentation cancelled")
        n += len(block)
        x = np.concatenate([rest, block]) if len(rest) else block
        k = len(x) // WINDOW * WINDOW
        frames = torch.from_numpy(np.ascontiguousarray(x[:k])).view(-1, 1, WINDOW)
        quiet = np.abs(x[:k]).reshape(-1, WINDOW).max(axis=1) < QUIET_LEVEL if k else np.zeros(0, bool)
        for f, q in zip(frames, quiet):
            quiet_run = quiet_run + 1 if q else 0
            probs.append(0.0 if quiet_run > QUIET_RUN else model(f, SAMPLE_RATE).item())
        rest = x[k:]
    if len(rest):
        last = torch.from_numpy(np.pad(rest, (0, WINDOW - len(rest))))[None]
        probs.append(model(last, SAMPLE_RATE).item())
    return np.asarray(probs, np.float32), n


def segments_from_probs(probs: np.ndarray, n_samples: int, opts: SegmentOptions) -> list[Segment]:
    """Speech segments (seconds) from per-frame probabilities, each at most `opts.max_seconds` long."""
    spans = _silero().get_speech_timestamps_from_probs(
        probs.tolist(), sampling_rate=SAMPLE_RATE, threshold=opts.threshold,
        min_speech_duration_ms=int(opts.min_speech * 1000), max_speech_duration_s=opts.max_seconds,
        min_silence_duration_ms=int(opts.min_silence * 1000), speech_pad_ms=int(opts.pad * 1000),
        audio_length_samples=n_samples,
    )
    out = []
    for span in spans:
        start, end = span["start"] / SAMPLE_RATE, span["end"] / SAMPLE_RATE
        parts = max(1, math.ceil((end - start) / opts.max_seconds - 1e-9))  # no inner pause: equal cuts
        step = (end - start) / parts
        out.extend(Segment(round(start + i * step, 3), round(start + (i + 1) * step, 3)) for i in range(parts))
    return out


def _array(audio) -> np.ndarray:
    wav = np.asarray(audio, dtype=np.float32)
    if wav.ndim != 1 or wav.size == 0 or not np.isfinite(wav).all():
        raise AudioError(f"expected a finite mono 16 kHz waveform of shape (samples,), got shape {wav.shape}")
    return wav


def segment(audio, opts: SegmentOptions, offset: float = 0.0, duration: float | None = None,
            max_samples: int | None = MAX_INPUT_SAMPLES, cancel: threading.Event | None = None) -> list[Segment]:
    """Speech segments of `audio` (a path, read in blocks; or a (S,) 16 kHz array), times relative to
    `offset`. An array is segmented in place (it is already in memory)."""
    if isinstance(audio, (str, Path)):
        blocks = stream_audio(audio, offset=offset, duration=duration, max_samples=max_samples)
    else:
        wav = _array(audio)
        blocks = (wav[i : i + SAMPLE_RATE * 20] for i in range(0, len(wav), SAMPLE_RATE * 20))
    probs, n = speech_probs(blocks, cancel)
    return segments_from_probs(probs, n, opts)


def plan_segments(audio, opts: SegmentOptions, offset: float = 0.0, duration: float | None = None,
                  max_samples: int | None = MAX_INPUT_SAMPLES, cancel: threading.Event | None = None) -> list[Segment]:
    """The segments to decode: the whole clip if it is at most `opts.max_seconds`, else `segment()`.

    A long recording with no speech gives no segments (an empty translation)."""
    if isinstance(audio, (str, Path)):
        total = audio_duration(audio) - offset if duration is None else duration
    else:
        total = len(_array(audio)) / SAMPLE_RATE
    if total <= opts.max_seconds + 1e-3:
        return [Segment(0.0, total)]  # not rounded: the whole clip is read back exactly (even a too-short one)
    return segment(audio, opts, offset=offset, duration=duration, max_samples=max_samples, cancel=cancel)


def segment_audio(audio, seg: Segment, offset: float = 0.0, max_samples: int | None = MAX_INPUT_SAMPLES) -> np.ndarray:
    """The (S,) float32 16 kHz samples of `seg` (a path is read by seeking; an array is sliced)."""
    if isinstance(audio, (str, Path)):
        return load_audio(audio, offset=offset + seg.start, duration=seg.seconds, max_samples=max_samples)
    a, b = int(round(seg.start * SAMPLE_RATE)), int(round(seg.end * SAMPLE_RATE))
    return np.asarray(audio, dtype=np.float32)[a:b]
