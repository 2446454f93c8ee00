"""Audio loading: any file soundfile reads (wav, flac, mp3, ogg) -> float32 mono at 16 kHz.

Every problem with a clip (missing, unreadable, empty, silent, NaN, too long) is an AudioError whose
message names the file, so a bad clip in a 200k-clip corpus can be found and fixed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from llast.errors import AudioError

SAMPLE_RATE = 16000  # Hz: what Whisper, wav2vec 2.0 and HuBERT expect
SILENCE_LEVEL = 1e-6  # a clip whose every |sample| is below this is treated as silent
# Shortest clip the encoders take: Whisper's STFT needs > 200 samples, wav2vec 2.0's convolutions 400;
# 0.1 s also leaves every adaptor (frame stacking, LST's strided convolutions) at least one embedding.
MIN_SECONDS = 0.1
MIN_SAMPLES = int(MIN_SECONDS * SAMPLE_RATE)
# Most raw samples (frames x channels, at the file's own rate) one read may decode: 2**28 float32
# samples are 1 GiB. A 10-minute 8-channel 96 kHz FLAC (461 M) is refused; 4 h of 16 kHz mono passes.
MAX_DECODE_SAMPLES = 2**28


def check_length(n_samples: int, where: str) -> None:
    """AudioError naming `where` if a 16 kHz clip of `n_samples` is too short for the encoders."""
    if n_samples < MIN_SAMPLES:
        raise AudioError(
            f"{where}: {n_samples / SAMPLE_RATE:.3f} s of audio ({n_samples} samples at 16 kHz) is shorter "
            f"than the minimum of {MIN_SECONDS:g} s"
        )


def check_decode_size(frames: int, channels: int, sample_rate: int, where: str) -> None:
    """AudioError naming `where` if decoding `frames` x `channels` samples would exceed MAX_DECODE_SAMPLES."""
    if frames * channels > MAX_DECODE_SAMPLES:
        raise AudioError(
            f"{where}: {frames / sample_rate:.0f} s x {channels} channels x {sample_rate} Hz is "
            f"{frames * channels / 1e6:.0f} M samples to decode, more than the limit of {MAX_DECODE_SAMPLES / 1e6:.0f} M; "
            "convert it to 16 kHz mono first (e.g. sox in.flac -r 16000 -c 1 out.wav)"
        )


def audio_duration(path: str | Path) -> float:
    """Length of an audio file in seconds, from its header only (fast; no decoding)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(f"{path}: cannot read audio header: {e}") from None
    if info.samplerate <= 0:
        raise AudioError(f"{path}: invalid sample rate {info.samplerate}")
    return info.frames / info.samplerate


def load_audio(
    path: str | Path,
    offset: float = 0.0,
    duration: float | None = None,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Read `duration` seconds from `offset` seconds into `path` as float32 mono at SAMPLE_RATE.

    Only the requested segment is decoded (a MuST-C talk is read by seeking, not whole).
    Channels are averaged; other sample rates are resampled with soxr.

    Returns
    -------
    np.ndarray, shape = (n_samples,), dtype float32, n_samples ~= seconds * SAMPLE_RATE

    Raises AudioError (naming the path) for a missing, unreadable, empty, too short (< MIN_SECONDS) or
    silent clip, NaN/inf samples, a clip longer than `max_seconds`, or one with more raw samples to
    decode than MAX_DECODE_SAMPLES.
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
            seconds = (f.frames - start if frames < 0 else frames) / sr
            # Check the length before decoding, so a 2-hour file is rejected without reading it.
            if max_seconds is not None and seconds > max_seconds + 1e-3:
                raise AudioError(f"{path}: {seconds:.2f} s is longer than the limit of {max_seconds:g} s")
            if duration is not None and duration <= 0:
                raise AudioError(f"{path}: duration {duration:g} s is not positive")
            check_decode_size(f.frames - start if frames < 0 else frames, f.channels, sr, str(path))
            if start > 0:
                if start >= f.frames:
                    raise AudioError(f"{path}: offset {offset:g} s is past the end ({f.frames / sr:.2f} s)")
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
