"""Live translation: the streaming segmenter (llast.live), Translator.translate_stream, `llast translate --live`
on stdin, and the WebSocket /v1/realtime of `llast serve` (llast.realtime) with a tiny checkpoint."""

import base64
import io
import json
import sys
import urllib.request

import numpy as np
import pytest
import soundfile as sf
import torch
from websockets.sync.client import connect

import tiny
from llast.cli import main
from llast.decode import load_model
from llast.errors import AudioError
from llast.live import LiveSegmenter, blocks_of, pcm16_to_float, pcm_blocks
from llast.segment import WINDOW, SegmentOptions, segment, segments_from_probs
from llast.serve import Server, ServeOptions
from test_segment import concatenated, speech_clips

KEY = "live-key"
OPTS = [SegmentOptions(max_seconds=30), SegmentOptions(max_seconds=4),
        SegmentOptions(max_seconds=8, min_silence=0.1, pad=0.3, min_speech=0.1, threshold=0.4)]


class ScriptedVad:
    """Stands in for Silero: returns the given speech probabilities, one per 512-sample frame."""

    def __init__(self, probs):
        self.probs = iter(probs)

    def reset_states(self):
        pass

    def __call__(self, frame, rate):
        return torch.tensor(next(self.probs))


def _probs(rng, n_frames: int) -> np.ndarray:
    """Runs of speech and pause of random lengths, with values near the thresholds."""
    out = []
    while len(out) < n_frames:
        speech = rng.random() < 0.5
        length = int(rng.integers(1, 400 if speech else 40))
        base = rng.uniform(0.45, 1.0, length) if speech else rng.uniform(0.0, 0.55, length)
        out.extend(base)
    return np.asarray(out[:n_frames], np.float32)


def _stream(segmenter, wav, seconds):
    got, most = [], 0.0
    for block in blocks_of(wav, seconds):
        got += segmenter.push(block)
        most = max(most, segmenter.buffered_seconds)
    return got + segmenter.flush(), most


@pytest.mark.parametrize("opts", OPTS)
def test_segmenter_applies_the_offline_rule_frame_by_frame(opts):
    rng = np.random.default_rng(0)
    for trial in range(6):
        probs = _probs(rng, int(rng.integers(200, 3000)))
        n = len(probs) * WINDOW - int(rng.integers(0, WINDOW))
        expected = segments_from_probs(probs, n, opts)
        got, _ = _stream(LiveSegmenter(opts, ScriptedVad(probs)), np.zeros(n, np.float32), [0.05, 0.7, 3.1][trial % 3])
        assert [s for s, _ in got] == expected


@pytest.mark.parametrize("opts", OPTS)
def test_segmenter_gives_the_segments_and_audio_of_the_file_path(tmp_path, opts):
    wav, _ = concatenated()
    wav = np.concatenate([wav, wav])  # 72 s
    sf.write(tmp_path / "talk.wav", wav, 16000, subtype="FLOAT")
    expected = segment(tmp_path / "talk.wav", opts)
    for seconds in (0.1, 2.3):
        got, most = _stream(LiveSegmenter(opts), wav, seconds)
        assert [s for s, _ in got] == expected
        for seg, audio in got:
            assert np.array_equal(audio, wav[int(round(seg.start * 16000)) : int(round(seg.end * 16000))])
        # memory: the open segment and a block, not the stream
        assert most <= opts.max_seconds + opts.min_silence + 2 * opts.pad + seconds + 0.5


def test_a_speaker_who_never_pauses_gets_segments_before_the_stream_ends():
    wav = np.concatenate(speech_clips())  # 30 s of read speech with no pause between the clips
    opts = SegmentOptions(max_seconds=5)
    segmenter, before_end = LiveSegmenter(opts), []
    for block in blocks_of(wav, 0.1):
        before_end += segmenter.push(block)
    rest = segmenter.flush()
    assert len(before_end) >= 3 and all(s.seconds <= 5.0 + 1e-6 for s, _ in before_end + rest)
    assert [s for s, _ in before_end + rest] == segment(wav, opts)


def _with_guesses(segmenter, wav, seconds):
    """Stream `wav`; every segment handed out, and the stream time (s) and guesses of each tentative() call."""
    got, guesses = [], []
    for block in blocks_of(wav, seconds):
        ready = segmenter.push(block)
        got += [(seg, audio, segmenter.seconds) for seg, audio in ready]
        if not ready:
            guesses.append((segmenter.seconds, segmenter.tentative()))
    return got + [(seg, audio, segmenter.seconds) for seg, audio in segmenter.flush()], guesses


@pytest.mark.parametrize("opts", OPTS)
def test_tentative_segments_are_the_ones_a_pause_closes(opts):
    """What tentative() guesses is either dropped or later handed out with exactly the same samples."""
    rng = np.random.default_rng(1)
    hits = 0
    for trial in range(6):
        probs = _probs(rng, int(rng.integers(200, 3000)))
        n = len(probs) * WINDOW
        wav = rng.standard_normal(n).astype(np.float32) * 0.1
        got, guesses = _with_guesses(LiveSegmenter(opts, ScriptedVad(probs)), wav, [0.05, 0.7][trial % 2])
        assert [s for s, _, _ in got] == segments_from_probs(probs, n, opts)  # guessing changes nothing
        final = {(s.start, s.end): a for s, a, _ in got}
        for _, guess in guesses:
            for seg, audio in guess:
                if (seg.start, seg.end) in final:
                    hits += 1
                    assert np.array_equal(audio, final[(seg.start, seg.end)])
    assert hits > 0 or opts.min_silence <= opts.pad  # a pause shorter than the padding closes before a guess


def test_tentative_guesses_each_pause_before_it_closes():
    """Read speech with pauses: every segment that a pause ends is guessed, with its samples, about
    min_silence - pad before push() hands it out."""
    wav, _ = concatenated()
    opts = SegmentOptions(max_seconds=30)
    got, guesses = _with_guesses(LiveSegmenter(opts), wav, 0.1)
    assert len(got) >= 5
    for seg, audio, handed_at in got[:-1]:  # the last one is closed by the end of the stream
        first = next(t for t, guess in guesses if any(s == seg for s, _ in guess))
        guessed = next(a for t, guess in guesses for s, a in guess if s == seg)
        assert np.array_equal(guessed, audio)
        assert handed_at - first >= opts.min_silence - opts.pad - 0.15


def test_speculation_gives_the_same_texts(translator, talk, monkeypatch):
    opts = SegmentOptions(max_seconds=10)
    plain = list(translator.translate_stream(blocks_of(talk, 0.1), src="fr", segment_options=opts, speculate=False))
    ahead = list(translator.translate_stream(blocks_of(talk, 0.1), src="fr", segment_options=opts))
    assert ahead == plain and len(plain) >= 5


def test_flush_and_clear_keep_one_timeline():
    wav, truth = concatenated()
    opts = SegmentOptions(max_seconds=30)
    cut = int(truth[2][0] * 16000) - 8000  # in the pause before the third sentence
    segmenter = LiveSegmenter(opts)
    first = segmenter.push(wav[:cut]) + segmenter.flush()
    second = segmenter.push(wav[cut:]) + segmenter.flush()
    assert [s for s, _ in first] == segment(wav[:cut], opts)
    assert [(round(s.start - cut / 16000, 3), round(s.end - cut / 16000, 3)) for s, _ in second] == [
        (pytest.approx(s.start, abs=2e-3), pytest.approx(s.end, abs=2e-3)) for s in segment(wav[cut:], opts)]
    segmenter.push(wav[:cut])
    segmenter.clear()  # the audio of the open segment is dropped; time goes on
    t0 = segmenter.seconds
    assert t0 == pytest.approx(len(wav) / 16000 + cut / 16000)
    third = segmenter.push(wav) + segmenter.flush()
    assert [(s.start, s.end) for s, _ in third] == [
        (pytest.approx(s.start + t0, abs=2e-3), pytest.approx(s.end + t0, abs=2e-3)) for s in segment(wav, opts)]


def test_pcm16_input():
    samples = np.array([0, 1, -1, 32767, -32768], "<i2")
    assert np.allclose(pcm16_to_float(samples.tobytes()), samples / 32768.0)
    with pytest.raises(AudioError, match="16-bit"):
        pcm16_to_float(b"\x00\x01\x02")

    class Trickle(io.BytesIO):  # a pipe that returns odd-sized pieces
        def read(self, n=-1):
            return super().read(min(n, 777))

    data = np.arange(-5000, 5000, dtype="<i2").tobytes()
    assert np.array_equal(np.concatenate(list(pcm_blocks(Trickle(data)))), np.arange(-5000, 5000) / 32768.0)
    with pytest.raises(AudioError, match="stray byte"):
        list(pcm_blocks(io.BytesIO(data + b"\x01")))
    with pytest.raises(AudioError, match="stream block"):
        LiveSegmenter(SegmentOptions()).push(np.zeros((2, 100), np.float32))


# --- with a tiny checkpoint ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tiny_dirs, tmp_path_factory):
    return str(tiny.lora_checkpoint(tiny_dirs, tmp_path_factory.mktemp("live") / "ckpt"))


@pytest.fixture(scope="module")
def translator(ckpt):
    return load_model(ckpt, dtype="float32")


@pytest.fixture(scope="module")
def talk():
    wav, _ = concatenated()
    return wav  # 36 s: five sentences and four pauses


def test_translate_stream_gives_the_segments_and_texts_of_translate(translator, talk):
    opts = SegmentOptions(max_seconds=10)
    expected = translator.translate(talk, src="fr", segments=True, segment_options=opts)
    got = list(translator.translate_stream(blocks_of(talk, 0.25), src="fr", segment_options=opts))
    assert got == expected and len(got) >= 5


def test_cli_live_reads_pcm_on_stdin(ckpt, translator, talk, monkeypatch, capsys):
    pcm = (np.clip(talk, -1, 32767 / 32768) * 32768).astype("<i2")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm.tobytes())))
    assert main(["translate", "--live", "--model", ckpt, "--src", "fr", "--chunk-seconds", "10", "--format", "json",
                 "--dtype", "float32", "-"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    expected = list(translator.translate_stream(blocks_of(pcm / 32768.0), src="fr", chunk_seconds=10))
    assert [(x["start"], x["end"], x["text"]) for x in lines] == [(s.start, s.end, s.text) for s in expected]
    assert main(["translate", "--live", "--model", ckpt, "--src", "fr", "talk.wav"]) == 1
    assert "--live reads the microphone" in capsys.readouterr().err
    assert main(["translate", "--model", ckpt, "--src", "fr"]) == 1
    assert "give one or more audio files" in capsys.readouterr().err


@pytest.fixture(scope="module")
def server(translator):
    opts = ServeOptions(api_key=KEY, max_wait_ms=50, read_timeout=2.0, max_streams=2)
    srv = Server(translator, port=0, opts=opts, seg_opts=SegmentOptions(max_seconds=10), log_level="warning").start()
    yield srv
    srv.stop()


def _connect(server, key=KEY, protocol=False):
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?intent=transcription"
    if protocol:  # as browsers send the key
        return connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{key}"], open_timeout=10)
    return connect(url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=10)


def _recv(ws, timeout=60):
    return json.loads(ws.recv(timeout=timeout))


def _append(ws, wav):
    pcm = (np.clip(wav, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()
    ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))


def _session(ws, **session):
    ws.send(json.dumps({"type": "transcription_session.update", "session": session}))
    event = _recv(ws)
    assert event["type"] == "transcription_session.updated", event
    return event["session"]


def _finish(ws):
    """Commit, then collect events until every committed segment has its result: (segments, other events)."""
    ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    committed, results, other, done = [], {}, [], False
    while not done or len(results) < len(committed):
        event = _recv(ws)
        if event["type"] == "input_audio_buffer.committed":
            committed.append(event)
        elif event["type"].startswith("conversation.item.input_audio_transcription."):
            results[event["item_id"]] = event
        elif event["type"] == "llast.commit.done":
            done = True
        else:
            other.append(event)
    return [results[c["item_id"]] for c in committed], committed, other


def _ahead(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=10) as r:
        return json.loads(r.read())["live_segments_decoded_ahead"]


def test_websocket_stream_gives_the_segments_and_texts_of_translate(server, translator, talk):
    before = _ahead(server)
    with _connect(server) as ws:
        created = _recv(ws)
        assert created["type"] == "transcription_session.created"
        session = _session(ws, input_audio_format="pcm16", input_audio_transcription={"language": "fr"})
        assert session["turn_detection"]["silence_duration_ms"] == 500
        for block in blocks_of(talk, 0.1):
            _append(ws, block)
        results, committed, other = _finish(ws)
    pcm = (np.clip(talk, -1, 32767 / 32768) * 32768).astype("<i2") / 32768.0
    expected = translator.translate(pcm.astype(np.float32), src="fr", segments=True,
                                    segment_options=SegmentOptions(max_seconds=10))
    assert other == []
    assert [(r["start"], r["end"], r["transcript"]) for r in results] == [(s.start, s.end, s.text) for s in expected]
    assert [c["previous_item_id"] for c in committed[1:]] == [c["item_id"] for c in committed[:-1]]
    assert all(r["type"].endswith(".completed") for r in results)
    after = _ahead(server)  # the segments that pauses closed were decoded ahead, and their texts are the same
    assert after["used"] - before["used"] >= len(results) - 1 >= 4
    assert after["started"] - before["started"] >= after["used"] - before["used"]


def test_websocket_resamples_24k_and_takes_the_key_as_a_subprotocol(server, talk):
    import soxr

    with _connect(server, protocol=True) as ws:
        assert ws.subprotocol == "realtime"
        _recv(ws)
        _session(ws, input_audio_rate=24000, input_audio_transcription={"language": "fr"}, task="transcribe",
                 turn_detection={"type": "server_vad", "silence_duration_ms": 400, "prefix_padding_ms": 100})
        wav24 = soxr.resample(talk, 16000, 24000)
        for block in blocks_of(wav24, 0.1):
            _append(ws, block)
        results, _, _ = _finish(ws)
    expected = segment(talk, SegmentOptions(max_seconds=10, min_silence=0.4, pad=0.1))
    assert len(results) == len(expected)
    for r, s in zip(results, expected):
        assert abs(r["start"] - s.start) < 0.1 and abs(r["end"] - s.end) < 0.1


def test_bad_events_get_error_events_and_the_stream_goes_on(server, talk):
    with _connect(server) as ws:
        _recv(ws)
        bad = [
            ("not json", "invalid_json"),
            (json.dumps([1, 2]), "invalid_event"),
            (json.dumps({"type": "response.create"}), "unknown_event"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "AAA="}), "missing_language"),
            (json.dumps({"type": "transcription_session.update", "session": {"input_audio_format": "g711_ulaw"}}),
             "unsupported_audio_format"),
            (json.dumps({"type": "transcription_session.update", "session": {"input_audio_rate": 96000}}), "invalid_value"),
            (json.dumps({"type": "transcription_session.update", "session": {"voice": "alloy"}}), "unknown_parameter"),
            (json.dumps({"type": "transcription_session.update",
                         "session": {"input_audio_transcription": {"language": "xx-nope"}}}), "invalid_value"),
            (json.dumps({"type": "transcription_session.update", "session": {"turn_detection": None}}),
             "unsupported_turn_detection"),
            (b"\x00\x01", "invalid_event"),
        ]
        for message, code in bad:
            ws.send(message)
            event = _recv(ws)
            assert event["type"] == "error" and event["error"]["code"] == code, (message, event)
        _session(ws, input_audio_transcription={"language": "fr"})
        for message, code in [
            (json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}), "invalid_audio"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode(),
                         "event_id": "mine"}), "invalid_audio"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": 5}), "invalid_value"),
        ]:
            ws.send(message)
            event = _recv(ws)
            assert event["error"]["code"] == code, event
        assert event["error"]["param"] == "audio"
        _append(ws, np.zeros(1600, np.float32))
        ws.send(json.dumps({"type": "transcription_session.update", "session": {"task": "transcribe"}}))
        assert _recv(ws)["error"]["code"] == "session_fixed"
        _append(ws, talk[: 16000 * 8])
        results, _, other = _finish(ws)
        assert results and all(r["type"].endswith(".completed") for r in results) and other == []


def test_wrong_key_cap_and_idle_timeout(server, talk):
    from websockets.exceptions import ConnectionClosed

    with _connect(server, key="wrong") as ws:
        event = _recv(ws)
        assert event["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1008
    # the cap is 2: 20 more streams get a clear error and are closed; the two open ones still work
    with _connect(server) as first, _connect(server) as second:
        for ws in (first, second):
            _recv(ws)
            _session(ws, input_audio_transcription={"language": "fr"})
        for _ in range(20):
            for ws in (first, second):  # a little silence keeps them from the idle timeout (2 s here)
                _append(ws, np.zeros(160, np.float32))
            with _connect(server) as extra:
                event = _recv(extra)
                assert event["type"] == "error" and event["error"]["code"] == "server_busy"
                with pytest.raises(ConnectionClosed):
                    extra.recv(timeout=10)
                assert extra.close_code == 1013
        for ws in (first, second):
            _append(ws, talk[: 16000 * 8])
            results, _, _ = _finish(ws)
            assert results
    # a client that stops sending is closed after read_timeout (2 s here), with an error event
    with _connect(server) as ws:
        _recv(ws)
        event = _recv(ws, timeout=20)
        assert event["error"]["code"] == "idle_timeout"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    with urllib.request.urlopen(f"{server.url}/health", timeout=10) as r:
        assert json.loads(r.read())["status"] == "ok"


def test_the_page_is_served(server):
    with urllib.request.urlopen(f"{server.url}/", timeout=10) as r:
        page = r.read().decode()
    assert r.status == 200 and "/web/live.js" in page
    for name in ("live.js", "worklet.js", "style.css"):
        with urllib.request.urlopen(f"{server.url}/web/{name}", timeout=10) as r:
            assert r.status == 200 and len(r.read()) > 100


def test_microphone_errors_are_one_line_and_come_before_the_model_loads(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as if sounddevice (or PortAudio) were missing
    assert main(["translate", "--live", "--model", "no/such/checkpoint", "--src", "fr"]) == 1
    err = capsys.readouterr().err
    assert "libportaudio2" in err and "--live -" in err and len(err.strip().splitlines()) == 1


def test_a_client_that_goes_away_mid_stream_frees_its_place(server, talk):
    import time

    with _connect(server) as ws:
        _recv(ws)
        _session(ws, input_audio_transcription={"language": "fr"})
        for block in blocks_of(np.concatenate([talk, talk]), 0.5):  # faster than it is decoded: back-pressure
            _append(ws, block)
    deadline = time.monotonic() + 120
    while server.app.ctx["streams"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.app.ctx["streams"] == 0
    with _connect(server) as ws:
        assert _recv(ws)["type"] == "transcription_session.created"
