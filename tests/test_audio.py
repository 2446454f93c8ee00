import numpy as np
import pytest
import soundfile as sf

from llast.audio import SAMPLE_RATE, audio_duration, load_audio
from llast.errors import AudioError


def tone(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize(
    "fmt,sr,channels",
    [("wav", 44100, 2), ("flac", 48000, 2), ("wav", 16000, 1), ("ogg", 44100, 1), ("mp3", 48000, 2)],
)
def test_load_resamples_to_16k_mono(tmp_path, fmt, sr, channels):
    path = tmp_path / f"a.{fmt}"
    sf.write(path, tone(2.0, sr, channels), sr, format=fmt.upper())
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    # MP3 adds encoder delay/padding of a few ms; the rest are exact up to rounding.
    tol = 0.06 * SAMPLE_RATE if fmt == "mp3" else 2
    assert abs(len(x) - 2.0 * SAMPLE_RATE) <= tol
    assert 0.2 < np.abs(x).max() < 0.4
    assert audio_duration(path) == pytest.approx(2.0, abs=0.06)


def test_stereo_is_averaged(tmp_path):
    left = tone(1.0, SAMPLE_RATE)
    path = tmp_path / "lr.wav"
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), left / 2, atol=1e-6)


def test_segment_by_offset_and_duration(tmp_path):
    sr = 48000
    x = np.zeros(5 * sr, dtype=np.float32)
    x[2 * sr : 3 * sr] = 0.5  # a loud second in the middle
    path = tmp_path / "talk.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    seg = load_audio(path, offset=2.0, duration=1.0)
    assert abs(len(seg) - SAMPLE_RATE) <= 1
    assert np.median(seg) == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(AudioError, match="past the end"):
        load_audio(path, offset=6.0)


def test_missing(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="nope.wav.*not found"):
        load_audio(path)
    with pytest.raises(AudioError, match="nope.wav"):
        audio_duration(path)


def test_corrupt(tmp_path):
    path = tmp_path / "bad.mp3"
    path.write_bytes(b"this is not audio" * 50)
    with pytest.raises(AudioError, match="bad.mp3"):
        load_audio(path)
    with pytest.raises(AudioError, match="bad.mp3"):
        audio_duration(path)


def test_empty(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="empty.wav.*empty"):
        load_audio(path)


def test_silent(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="silent.wav.*silent"):
        load_audio(path)


def test_nan(tmp_path):
    x = tone(1.0, SAMPLE_RATE)
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav.*NaN"):
        load_audio(path)


def test_too_long(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, tone(3.0, 22050), 22050)
    with pytest.raises(AudioError, match=r"long.flac: 3.00 s is longer than the limit of 2 s"):
        load_audio(path, max_seconds=2.0)
    assert len(load_audio(path, max_seconds=3.0)) == pytest.approx(3 * SAMPLE_RATE, abs=2)
    # A segment of a long file is judged by the segment's length.
    assert len(load_audio(path, offset=1.0, duration=1.5, max_seconds=2.0)) == pytest.approx(1.5 * SAMPLE_RATE, abs=2)


def test_flac_whose_header_gives_no_length(tmp_path):
    """A FLAC streamed without seeking back has total_samples = 0 in its STREAMINFO: libsndfile then reports
    2**63 - 1 frames (and soundfile cannot read it to its end). A clear error saying so, not "5.8e14 s"."""
    from llast.audio import stream_audio

    x = (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(2.5 * SAMPLE_RATE)) / SAMPLE_RATE)).astype(np.float32)
    sf.write(tmp_path / "a.flac", x, SAMPLE_RATE, subtype="PCM_16")
    b = bytearray((tmp_path / "a.flac").read_bytes())
    assert b[:4] == b"fLaC"
    b[21] &= 0xF0  # STREAMINFO's 36-bit total_samples: the low 4 bits of byte 21 and bytes 22-25
    b[22:26] = bytes(4)
    (tmp_path / "piped.flac").write_bytes(bytes(b))
    assert sf.info(str(tmp_path / "piped.flac")).frames > 2**40  # the header really gives no length
    for read in (audio_duration, load_audio, lambda p: list(stream_audio(p))):
        with pytest.raises(AudioError, match="piped.flac: its header gives no length.*re-encode"):
            read(tmp_path / "piped.flac")
