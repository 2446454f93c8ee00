"""Audio loading: any file soundfile reads (wav, flac, mp3, ogg) -> float32 mono at 16 kHz.

Every problem with a clip (missing, unreadable, empty, silent, NaN, too long) is an AudioError whose
message names the file, so a bad clip in a 200k-clip corpus can be found and fixed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from llast.errors import AudioError

SAMPLE_RATE = 16000  # Hz: what Whisper, wav2vec 2.0 and HuBERT expect
HOP_LENGTH = 160  # samples between Whisper's log-mel frames (10 ms)
N_SAMPLES_30S = 30 * SAMPLE_RATE  # 480000 samples: Whisper's fixed input window
SILENCE_LEVEL = 1e-6  # a clip whose every |sample| is below this is treated as silent
# Shortest clip the encoders take: Whisper's STFT needs > 200 samples, wav2vec 2.0's convolutions 400;
# 0.1 s also leaves every adaptor (frame stacking, LST's strided convolutions) at least one embedding.
MIN_SECONDS = 0.1
MIN_SAMPLES = int(MIN_SECONDS * SAMPLE_RATE)
BLOCK_SECONDS = 20.0  # stream_audio decodes this much at a time
# Bounds on what a file may cost to decode, in raw samples (frames x channels, at the file's own rate):
# - read whole (load_audio): 2**28 float32 samples are 1 GiB. A 10-minute 8-channel 96 kHz FLAC of
#   476 KB (461 M) is refused; 4 h of 16 kHz mono passes;
# - read in blocks (stream_audio, long-form segmentation): memory stays bounded by the block, so the
#   bound is on decoding time: 6 h of 48 kHz stereo.
MAX_DECODE_SAMPLES = 2**28
MAX_INPUT_SAMPLES = 6 * 3600 * 2 * 48000
# libsndfile reports 2**63 - 1 frames for a FLAC whose header gives no length (total_samples 0: written to
# a pipe); reading such a file to its end then fails inside soundfile (it seeks after every read).
UNKNOWN_FRAMES = 2**40


def _frames(f: sf.SoundFile, path) -> int:
    """The number of frames of open file `f`, from its header; AudioError if the header does not say."""
    if f.frames >= UNKNOWN_FRAMES:
        raise AudioError(f"{path}: its header gives no length (a FLAC streamed to a pipe?); re-encode it, e.g. "
                         f"sox in.flac out.flac or ffmpeg -i in.flac out.flac")
    return f.frames


def check_length(n_samples: int, where: str) -> None:
    """AudioError naming `where` if a 16 kHz clip of `n_samples` is too short for the encoders."""
    if n_samples < MIN_SAMPLES:
        raise AudioError(
            f"{where}: {n_samples / SAMPLE_RATE:.3f} s of audio ({n_samples} samples at 16 kHz) is shorter "
            f"than the minimum of {MIN_SECONDS:g} s"
        )


def audio_duration(path: str | Path) -> float:
    """Length of an audio file in seconds, from its header only (fast; no decoding)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        with sf.SoundFile(str(path)) as f:
            if f.samplerate <= 0:
                raise AudioError(f"{path}: invalid sample rate {f.samplerate}")
            return _frames(f, path) / f.samplerate
    except AudioError:
        raise
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(f"{path}: cannot read audio header: {e}") from None


def check_input_size(path, frames: int, channels: int, samplerate: int, max_samples: int | None) -> None:
    """Refuse a file whose decoding would cost more than `max_samples` (frames x channels)."""
    if max_samples is not None and frames * channels > max_samples:
        raise AudioError(
            f"{path}: {frames / samplerate:.0f} s x {channels} channels x {samplerate} Hz = {frames * channels:.3g} samples "
            f"is more than the limit of {max_samples:.3g} (seconds x channels x rate); convert it to 16 kHz mono "
            "first (e.g. sox in.flac -r 16000 -c 1 out.wav)"
        )


def stream_audio(
    path: str | Path,
    offset: float = 0.0,
    duration: float | None = None,
    block_seconds: float = BLOCK_SECONDS,
    max_samples: int | None = MAX_INPUT_SAMPLES,
) -> Iterator[np.ndarray]:
    """Yield `path` (from `offset`, for `duration` seconds) as float32 mono 16 kHz blocks of about
    `block_seconds` each, so memory is bounded by the block, not the file.

    Yields np.ndarray, shape = (n,), dtype float32. Raises AudioError (naming the path) for a missing or
    unreadable file, NaN/inf samples, or a file whose decoding exceeds `max_samples` (frames x channels).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        f = sf.SoundFile(str(path))
    except Exception as e:
        raise AudioError(f"{path}: cannot read audio: {e}") from None
    with f:
        sr, channels = f.samplerate, f.channels
        start = int(round(offset * sr))
        try:
            n_frames = _frames(f, path)
        except AudioError:
            raise
        except Exception as e:
            raise AudioError(f"{path}: cannot read audio: {e}") from None
        total = n_frames - start if duration is None else min(int(round(duration * sr)), n_frames - start)
        check_input_size(path, max(total, 0), channels, sr, max_samples)
        if start > 0:
            f.seek(start)
        resampler = None if sr == SAMPLE_RATE else soxr.ResampleStream(sr, SAMPLE_RATE, 1, dtype="float32")
        block = max(1, int(block_seconds * sr))
        left = total
        while left > 0:
            try:
                x = f.read(min(block, left), dtype="float32", always_2d=True)  # (n, channels)
            except Exception as e:
                raise AudioError(f"{path}: cannot read audio: {e}") from None
            if x.shape[0] == 0:
                break
            left -= x.shape[0]
            if not np.isfinite(x).all():
                raise AudioError(f"{path}: audio contains NaN or infinite samples")
            mono = x.mean(axis=1)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=left <= 0)
            if len(mono):
                yield np.ascontiguousarray(mono, dtype=np.float32)
        if resampler is not None and left > 0:  # the file ended early: flush the resampler
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if len(tail):
                yield np.ascontiguousarray(tail, dtype=np.float32)


def load_audio(
    path: str | Path,
    offset: float = 0.0,
    duration: float | None = None,
    max_seconds: float | None = None,
    max_samples: int | None = MAX_DECODE_SAMPLES,
) -> np.ndarray:
    """Read `duration` seconds from `offset` seconds into `path` as float32 mono at SAMPLE_RATE.

    Only the requested segment is decoded (a MuST-C talk is read by seeking, not whole).
    Channels are averaged; other sample rates are resampled with soxr.

    Returns
    -------
    np.ndarray, shape = (n_samples,), dtype float32, n_samples ~= seconds * SAMPLE_RATE

    Raises AudioError (naming the path) for a missing, unreadable, empty, too short (< MIN_SECONDS) or
    silent clip, NaN/inf samples, a clip longer than `max_seconds`, or one whose decoding exceeds
    `max_samples` (frames x channels; default MAX_DECODE_SAMPLES).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    if offset < 0:
        raise AudioError(f"{path}: negative offset {offset}")
    try:
        with sf.SoundFile(str(path)) as f:
            sr = f.samplerate
            start = int(round(offset * sr))
            frames = -1 if duration is None else int(round(duration * sr))
            n_frames = _frames(f, path)
            seconds = (n_frames - start if frames < 0 else frames) / sr
            # Check the length before decoding, so a 2-hour file is rejected without reading it.
            if max_seconds is not None and seconds > max_seconds + 1e-3:
                raise AudioError(f"{path}: {seconds:.2f} s is longer than the limit of {max_seconds:g} s")
            if duration is not None and duration < 0:  # 0: nothing to read, "empty audio" below
                raise AudioError(f"{path}: duration {duration:g} s is negative")
            check_input_size(path, max(int(round(seconds * sr)), 0), f.channels, sr, max_samples)
            if start > 0:
                if start >= n_frames:
                    raise AudioError(f"{path}: offset {offset:g} s is past the end ({n_frames / sr:.2f} s)")
                f.seek(start)
            x = f.read(frames, dtype="float32", always_2d=True)  # (n, channels)
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"{path}: cannot read audio: {e}") from None
    if x.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if not np.isfinite(x).all():
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    x = x.mean(axis=1)  # (n,)
    if sr != SAMPLE_RATE:
        x = soxr.resample(x, sr, SAMPLE_RATE).astype(np.float32)
    if max_seconds is not None and len(x) / SAMPLE_RATE > max_seconds + 1e-3:
        raise AudioError(f"{path}: {len(x) / SAMPLE_RATE:.2f} s is longer than the limit of {max_seconds:g} s")
    check_length(len(x), str(path))
    if np.abs(x).max() < SILENCE_LEVEL:
        raise AudioError(f"{path}: audio is silent (all samples below {SILENCE_LEVEL:g})")
    return np.ascontiguousarray(x, dtype=np.float32)
