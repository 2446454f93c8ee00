"""Segmentation (Silero VAD over audio read in blocks) and the subtitle formats."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from llast.audio import MAX_INPUT_SAMPLES, load_audio, stream_audio
from llast.errors import AudioError, ConfigError
from llast.segment import Segment, SegmentOptions, plan_segments, segment, segment_audio
from llast.subtitles import render, to_srt, to_vtt

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")  # Debian pocketsphinx-testdata: read speech, 16 kHz


def speech_clips() -> list[np.ndarray]:
    files = sorted(LIBRIVOX.glob("*.wav"))
    if len(files) < 5:
        pytest.skip("pocketsphinx-testdata is not installed (apt-get install pocketsphinx-testdata)")
    return [sf.read(f, dtype="float32")[0] for f in files[:5]]


def concatenated(pauses=(1.0, 1.5, 0.8, 2.0), noise: float = 1e-3, seed: int = 0):
    """Five read sentences separated by pauses of low noise: (waveform (S,), true [(start, end)] in seconds)."""
    rng = np.random.default_rng(seed)
    clips, parts, truth, t = speech_clips(), [], [], 0.0
    for i, clip in enumerate(clips):
        truth.append((t, t + len(clip) / 16000))
        parts.append(clip)
        t += len(clip) / 16000
        if i < len(pauses):
            parts.append((noise * rng.standard_normal(int(pauses[i] * 16000))).astype(np.float32))
            t += pauses[i]
    return np.concatenate(parts), truth


def test_segments_match_known_boundaries_from_file_and_array(tmp_path):
    wav, truth = concatenated()
    path = tmp_path / "talk.wav"
    sf.write(path, wav, 16000)
    opts = SegmentOptions(max_seconds=10)
    from_file = plan_segments(path, opts)
    assert len(from_file) == len(truth) == 5
    for seg, (start, end) in zip(from_file, truth):
        assert abs(seg.start - start) < 0.5 and abs(seg.end - end) < 0.5, (seg, start, end)
    assert plan_segments(wav, opts) == from_file  # an in-memory array is segmented the same way
    # Offset: segmenting the file from the second clip on gives the same boundaries, shifted.
    later = plan_segments(path, opts, offset=truth[1][0] - 0.5)
    assert len(later) == 4 and abs(later[0].start - 0.5) < 0.5


def test_resampled_stereo_flac_is_segmented_alike(tmp_path):
    wav, truth = concatenated()
    x44 = soxr.resample(wav, 16000, 44100).astype(np.float32)
    sf.write(tmp_path / "talk.flac", np.stack([x44, 0.5 * x44], axis=1), 44100)
    segs = plan_segments(tmp_path / "talk.flac", SegmentOptions(max_seconds=10))
    assert len(segs) == 5
    for seg, (start, end) in zip(segs, truth):
        assert abs(seg.start - start) < 0.5 and abs(seg.end - end) < 0.5
    audio = segment_audio(tmp_path / "talk.flac", segs[2])
    assert abs(len(audio) / 16000 - segs[2].seconds) < 0.01


def test_max_seconds_splits_every_segment_and_short_clips_stay_whole(tmp_path):
    wav, truth = concatenated()
    segs = segment(wav, SegmentOptions(max_seconds=3.0))
    assert all(s.seconds <= 3.0 + 1e-6 for s in segs)
    assert len(segs) > 5  # the 7.1 s, 5.3 s and 6.05 s sentences are cut
    covered = sum(s.seconds for s in segs)
    assert covered > 0.9 * sum(e - s for s, e in truth)
    assert all(a.end <= b.start + 1e-6 for a, b in zip(segs, segs[1:]))  # ordered, not overlapping
    # A clip within the limit is one segment covering all of it, whatever its pauses.
    short = wav[: int(12 * 16000)]
    assert plan_segments(short, SegmentOptions(max_seconds=30)) == [Segment(0.0, 12.0)]


def test_min_silence_merges_short_pauses():
    wav, truth = concatenated(pauses=(0.2, 0.2, 2.0, 2.0))
    assert len(segment(wav, SegmentOptions(min_silence=0.3))) == 5
    assert len(segment(wav, SegmentOptions(min_silence=1.0))) == 3  # the pauses around the 0.2 s gaps no longer cut


def test_long_recording_without_speech_has_no_segments(tmp_path):
    import torch

    rng = np.random.default_rng(0)
    sf.write(tmp_path / "hum.wav", (0.01 * rng.standard_normal(40 * 16000)).astype(np.float32), 16000)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert plan_segments(tmp_path / "hum.wav", SegmentOptions(max_seconds=30)) == []
        assert torch.get_num_threads() == 2  # silero_vad sets 1 on import; segmentation leaves the count alone
    finally:
        torch.set_num_threads(threads)


def test_stream_audio_reads_in_bounded_blocks_and_matches_load_audio(tmp_path):
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((44100 * 7, 2))).astype(np.float32)
    sf.write(tmp_path / "a.flac", x, 44100)
    blocks = list(stream_audio(tmp_path / "a.flac", block_seconds=1.0))
    assert len(blocks) >= 7 and max(len(b) for b in blocks) <= 1.1 * 16000  # about one block each
    streamed = np.concatenate(blocks)
    whole = load_audio(tmp_path / "a.flac")
    assert abs(len(streamed) - len(whole)) <= 2
    n = min(len(streamed), len(whole))
    assert np.abs(streamed[100 : n - 100] - whole[100 : n - 100]).max() < 1e-3
    part = np.concatenate(list(stream_audio(tmp_path / "a.flac", offset=2.0, duration=3.0)))
    assert abs(len(part) - 3 * 16000) <= 2


def test_decoding_cost_bound_names_the_file(tmp_path):
    sf.write(tmp_path / "wide.wav", np.zeros((96000, 8), np.float32), 96000)
    with pytest.raises(AudioError, match=r"wide\.wav.*8 channels.*limit"):
        list(stream_audio(tmp_path / "wide.wav", max_samples=96000 * 4))
    with pytest.raises(AudioError, match=r"wide\.wav.*limit"):
        load_audio(tmp_path / "wide.wav", max_samples=96000 * 4)
    assert MAX_INPUT_SAMPLES >= 3600 * 2 * 48000
    with pytest.raises(AudioError, match="not found"):
        plan_segments(tmp_path / "missing.wav", SegmentOptions())
    (tmp_path / "bad.wav").write_bytes(b"RIFF garbage")
    with pytest.raises(AudioError, match=r"bad\.wav"):
        plan_segments(tmp_path / "bad.wav", SegmentOptions())


@pytest.mark.parametrize("field,value", [("max_seconds", 0.5), ("min_silence", -1), ("pad", 3), ("threshold", 1.0),
                                         ("min_speech", -0.1)])
def test_segment_options_are_validated(field, value):
    with pytest.raises(ConfigError, match=field):
        SegmentOptions(**{field: value})


def _vtt_seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_srt_and_vtt_parse_back():
    import srt
    import webvtt

    segs = [Segment(0.43, 3.9, "Hello there."), Segment(5.0, 7.25, ""), Segment(3661.5, 3663.004, "Line --> two\nwith  space")]
    subs = list(srt.parse(to_srt(segs)))
    assert [s.content for s in subs] == ["Hello there.", "Line --> two with space"]  # no cue for empty text
    assert [(s.start.total_seconds(), s.end.total_seconds()) for s in subs] == [(0.43, 3.9), (3661.5, 3663.004)]
    cues = list(webvtt.from_string(to_vtt(segs)))
    assert [c.text for c in cues] == ["Hello there.", "Line -> two with space"]
    assert [(_vtt_seconds(c.start), _vtt_seconds(c.end)) for c in cues] == [(0.43, 3.9), (3661.5, 3663.004)]
    import json

    record = json.loads(render(segs, "json", {"file": "a.wav"}))
    assert record["file"] == "a.wav" and record["text"] == "Hello there. Line --> two\nwith  space"
    assert record["segments"][1] == {"start": 5.0, "end": 7.25, "text": ""}
    assert render(segs, "text") == "Hello there. Line --> two\nwith  space\n"
    with pytest.raises(ValueError, match="docx"):
        render(segs, "docx")


def test_digital_silence_is_not_run_through_the_model(monkeypatch):
    """Ten minutes of zeros cost QUIET_RUN model calls, not 18,750 (an hour-long silent upload must be cheap);
    frames of speech and of low noise (1e-3) still go through the model."""
    from llast import segment as seg

    model = seg._vad_model()
    calls = []

    class Counting:
        def reset_states(self):
            model.reset_states()

        def __call__(self, x, sr):
            calls.append(1)
            return model(x, sr)

    monkeypatch.setattr(seg, "_vad_model", Counting)
    probs, n = seg.speech_probs([np.zeros(16000 * 600, np.float32)])
    assert n == 16000 * 600 and len(probs) == n // seg.WINDOW and probs.max() < 0.1 and not probs[seg.QUIET_RUN:].any()
    assert len(calls) == seg.QUIET_RUN
    calls.clear()
    wav, truth = concatenated()
    probs, _ = seg.speech_probs([wav])
    assert len(calls) == len(probs)  # low noise between sentences is above QUIET_LEVEL: every frame is scored
