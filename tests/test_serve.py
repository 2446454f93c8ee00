"""`llast serve`: the OpenAI-compatible server on a tiny checkpoint, driven by OpenAI's own client."""

import dataclasses
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai
import pytest
import soundfile as sf

import tiny
from llast.decode import load_model
from llast.cli import build_parser, main
from llast.segment import SegmentOptions
from llast.serve import Server, ServeOptions

KEY = "test-key"
FORMATS = ["json", "text", "srt", "vtt", "verbose_json"]


@pytest.fixture(scope="module")
def ckpt(tiny_dirs, tmp_path_factory):
    return tiny.lora_checkpoint(tiny_dirs, tmp_path_factory.mktemp("serve") / "ckpt")


@pytest.fixture(scope="module")
def translator(ckpt):
    return load_model(ckpt, dtype="float32")


@pytest.fixture(scope="module")
def server(translator):
    opts = ServeOptions(api_key=KEY, max_wait_ms=100, max_queue=256, max_upload_mb=2, read_timeout=2.0,
                        max_input_samples=120 * 2 * 48000)
    srv = Server(translator, port=0, opts=opts, seg_opts=SegmentOptions(max_seconds=10), log_level="warning").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120)


def _wav(audio, rate=16000, fmt="WAV", subtype="FLOAT") -> bytes:
    """Float WAV by default: the server decodes exactly the samples the expected output is computed from."""
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _post(server, path, fields: dict, file: tuple | None, key: str | None = KEY, timeout=120):
    """A multipart POST with the standard library: (status, headers, body text)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    if file is not None:
        name, data = file
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{server.url}{path}", data=body, method="POST")
    req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def _health(server):
    with urllib.request.urlopen(f"{server.url}/health", timeout=10) as r:
        return json.loads(r.read())


def _cue_texts_srt(text):
    import srt

    return [c.content for c in srt.parse(text)]


def _check_format(fmt, result, expected: str):
    import webvtt

    flat = " ".join(expected.split())
    if fmt == "json":
        assert result.text == expected
    elif fmt == "text":
        assert result == expected + "\n"
    elif fmt == "srt":
        assert _cue_texts_srt(result) == ([flat] if flat else [])
    elif fmt == "vtt":
        assert [c.text for c in webvtt.from_string(result)] == ([flat] if flat else [])
    else:
        assert result.text == expected and result.duration == pytest.approx(1.2, abs=0.01)
        assert [(s.start, s.end, s.text) for s in result.segments] == [(0.0, 1.2, expected)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_openai_client_translations_and_transcriptions(server, client, translator, fmt):
    audio = tiny.clip(1.2, 5)
    expected = translator.translate(audio, src="fr", tgt="en")
    assert expected, "pick a clip the tiny model answers with some text"
    result = client.audio.translations.create(model="llast", file=("a.wav", _wav(audio)), response_format=fmt,
                                             extra_body={"language": "fr"})  # the source language
    _check_format(fmt, result, expected)
    expected = translator.translate(audio, src="fr", task="transcribe")
    result = client.audio.transcriptions.create(model="llast", file=("a.wav", _wav(audio)), language="fr",
                                                response_format=fmt, prompt="ignored", temperature=0.3)
    _check_format(fmt, result, expected)


def test_long_request_is_segmented_into_timed_cues(server, client, translator, tmp_path):
    from test_segment import concatenated

    wav, truth = concatenated()
    flac = _wav(wav, fmt="FLAC", subtype="PCM_16")
    (tmp_path / "talk.flac").write_bytes(flac)
    result = client.audio.translations.create(model="llast", file=("talk.flac", flac), extra_body={"language": "fr"},
                                              response_format="verbose_json")
    assert len(result.segments) == 5
    for seg, (start, end) in zip(result.segments, truth):
        assert abs(seg.start - start) < 0.5 and abs(seg.end - end) < 0.5
    translator.cfg.model.encoder.max_seconds = 10.0
    try:
        expected = translator.translate(tmp_path / "talk.flac", src="fr", segments=True)
    finally:
        translator.cfg.model.encoder.max_seconds = 30.0
    assert [s.text for s in result.segments] == [s.text for s in expected]


def test_concurrent_requests_valid_and_invalid_mixed(server, translator):
    clips = [tiny.clip(s, seed) for s, seed in [(1.0, 0), (0.6, 1), (1.4, 2), (1.2, 5)]]
    expected = translator.translate(clips, src="fr", tgt="en")
    bad = [("a.wav", b"RIFF not really audio"), ("a.wav", b""), ("notes.txt", b"hello, this is text"),
           ("silent.wav", _wav(np.zeros(16000, np.float32))),
           ("nan.wav", _wav(np.full(16000, np.nan, np.float32), subtype="FLOAT"))]
    requests = [("good", i % len(clips)) if i % 3 else ("bad", i % len(bad)) for i in range(100)]
    before = _health(server)["batches_run"]

    def send(req):
        kind, i = req
        file = ("a.wav", _wav(clips[i])) if kind == "good" else bad[i]
        return _post(server, "/v1/audio/translations", {"model": "m", "language": "fr"}, file)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(send, requests))
    for (kind, i), (status, _, body) in zip(requests, results):
        if kind == "good":
            assert status == 200 and json.loads(body)["text"] == expected[i]
        else:
            assert 400 <= status < 500 and json.loads(body)["error"]["message"], (bad[i][0], status, body)
    good = sum(1 for k, _ in requests if k == "good")
    assert _health(server)["batches_run"] - before < good, "concurrent requests share batches"
    assert _health(server)["status"] == "ok"


@pytest.mark.parametrize("fields,file,status,needle", [
    ({"model": "m"}, ("a.wav", None), 400, "language"),  # no language and no --default-src
    ({"model": "m", "language": "xx"}, ("a.wav", None), 400, "xx"),
    ({"model": "m", "language": "fr", "response_format": "docx"}, ("a.wav", None), 422, "response_format"),
    ({"model": "m", "language": "fr", "temperature": "5"}, ("a.wav", None), 422, "temperature"),
    ({"model": "m", "language": "fr", "temperature": "warm"}, ("a.wav", None), 422, "temperature"),
    ({"model": "m", "language": "fr"}, None, 422, "file"),
    ({"model": "m", "language": "fr"}, ("a.wav", b""), 400, "empty"),
])
def test_bad_fields_and_uploads_get_clear_4xx(server, fields, file, status, needle):
    if file is not None and file[1] is None:
        file = ("a.wav", _wav(tiny.clip(0.5)))
    code, _, body = _post(server, "/v1/audio/translations", fields, file)
    assert code == status, body
    assert needle in json.loads(body)["error"]["message"]


def test_decoding_cost_and_length_limits(server):
    wide = _wav(np.zeros((96000 * 40, 8), np.float32), rate=96000, fmt="FLAC", subtype="PCM_16")  # 40 s x 8 ch x 96 kHz: small FLAC
    assert len(wide) < 2 * 1024 * 1024
    code, _, body = _post(server, "/v1/audio/translations", {"model": "m", "language": "fr"}, ("wide.flac", wide))
    assert code == 413 and "channels" in json.loads(body)["error"]["message"]


def _reply(sock) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_upload_size_limit_is_checked_before_and_while_reading(server):
    auth = b"Authorization: Bearer " + KEY.encode() + b"\r\n"
    # Announced too big: refused from the headers, the body is never read.
    s = _raw(server, b"POST /v1/audio/translations HTTP/1.1\r\nHost: x\r\n" + auth +
             b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 3000000\r\n\r\n")
    assert _reply(s).startswith(b"HTTP/1.1 413")
    s.close()
    # Streamed without a length: refused once the limit is passed.
    s = _raw(server, b"POST /v1/audio/translations HTTP/1.1\r\nHost: x\r\n" + auth +
             b"Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n")
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    s.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
    chunk = b"x" * 65536
    for _ in range(2 * 1024 * 1024 // len(chunk) + 2):
        s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    reply = _reply(s)
    assert reply.startswith(b"HTTP/1.1 413")
    s.close()
    assert _health(server)["status"] == "ok"


def test_api_key_is_required(server):
    for key in (None, "wrong"):
        code, _, body = _post(server, "/v1/audio/translations", {"language": "fr"}, ("a.wav", _wav(tiny.clip(0.5))), key=key)
        assert code == 401 and "API key" in json.loads(body)["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope", max_retries=0).audio.translations.create(
            model="m", file=("a.wav", _wav(tiny.clip(0.5))), extra_body={"language": "fr"})
    assert _health(server)["status"] == "ok"  # /health needs no key
    with urllib.request.urlopen(f"{server.url}/openapi.json", timeout=10) as r:
        assert "/v1/audio/translations" in json.loads(r.read())["paths"]


@pytest.fixture
def server_errors():
    """Records the server logs at ERROR or above (uvicorn logs a traceback there for an unhandled exception)."""
    import logging

    records = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn", "llast.serve", "asyncio")]
    for lg in loggers:
        lg.addHandler(handler)
    yield records
    for lg in loggers:
        lg.removeHandler(handler)


def _raw(server, head: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(head)
    return s


def test_stalled_body_does_not_block_others_and_times_out(server, client, server_errors):
    head = (b"POST /v1/audio/translations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
            b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")
    stalled = [_raw(server, head) for _ in range(5)]
    try:
        result = client.audio.translations.create(model="m", file=("a.wav", _wav(tiny.clip(0.8))), extra_body={"language": "fr"})
        assert isinstance(result.text, str)  # served while five uploads hang
        for s in stalled:
            reply = s.recv(4096)  # the server gives up on the body after read_timeout (2 s here)
            assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    finally:
        for s in stalled:
            s.close()
    assert not server_errors


def test_disconnect_cancels_the_request_quietly(server, client, server_errors):
    from test_segment import concatenated

    wav, _ = concatenated()
    boundary = "b"
    data = _wav(wav)
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="language"\r\n\r\nfr\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n').encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /v1/audio/translations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    s = _raw(server, head + body)
    s.close()  # gone before the answer
    deadline = time.monotonic() + 120
    while _health(server)["requests_in_progress"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _health(server)["requests_in_progress"] == 0 and _health(server)["queued_requests"] == 0
    assert client.audio.translations.create(model="m", file=("a.wav", _wav(tiny.clip(0.8))), extra_body={"language": "fr"}).text is not None
    # A client gone mid-upload: the same, quietly.
    s = _raw(server, head + body[: len(body) // 2])
    s.close()
    time.sleep(0.5)  # for the server to read what was sent and see the connection closed
    assert _health(server)["requests_in_progress"] == 0 and _health(server)["queued_requests"] == 0
    assert not server_errors, [r.getMessage() for r in server_errors]


class GatedTranslator:
    """The tiny translator, with generate() held until `gate` is set, failing on clips of `poison` samples."""

    def __init__(self, translator, poison: int = -1):
        self.inner, self.poison, self.gate = translator, poison, threading.Event()
        self.cfg = translator.cfg
        self.calls = 0

    def decode_config(self, **kw):
        return self.inner.decode_config(**kw)

    def segment_options(self, *a, **kw):
        return self.inner.segment_options(*a, **kw)

    def generate(self, examples, decode, **kw):
        self.gate.wait(60)
        self.calls += 1
        if any(len(e.audio) == self.poison for e in examples):
            raise RuntimeError("decoder blew up")
        return self.inner.generate(examples, decode, **kw)


def test_two_pass_model_serves_two_pass_translations(ckpt, translator):
    """A model loaded for two passes (llast serve --two-pass, or a checkpoint with decode.two_pass) answers
    /v1/audio/translations with its two-pass translation; transcriptions stay one pass."""
    two = load_model(ckpt, dtype="float32", two_pass=True)
    audio = tiny.clip(1.2, 5)
    expected = two.translate(audio, src="fr", tgt="en")
    assert expected != translator.translate(audio, src="fr", tgt="en")  # the mode shows in the text
    srv = Server(two, port=0, opts=ServeOptions(default_src="fr"), log_level="warning").start()
    try:
        code, _, body = _post(srv, "/v1/audio/translations", {"response_format": "text"}, ("a.wav", _wav(audio)), None)
        assert code == 200 and body.strip() == expected
        code, _, body = _post(srv, "/v1/audio/transcriptions", {"response_format": "text", "language": "fr"},
                              ("a.wav", _wav(audio)), None)
        assert code == 200 and body.strip() == translator.translate(audio, src="fr", task="transcribe")
    finally:
        srv.stop()


def test_full_queue_gets_503_with_retry_after(translator):
    gated = GatedTranslator(translator)
    srv = Server(gated, port=0, opts=ServeOptions(max_queue=1, default_src="fr"), log_level="warning").start()
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(_post, srv, "/v1/audio/translations", {}, ("a.wav", _wav(tiny.clip(0.7))), None)
            deadline = time.monotonic() + 30
            while _health(srv)["queued_requests"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            code, headers, body = _post(srv, "/v1/audio/translations", {}, ("a.wav", _wav(tiny.clip(0.7))), None)
            assert code == 503 and int(headers["Retry-After"]) >= 1 and "busy" in body
            gated.gate.set()
            assert first.result()[0] == 200  # default_src stands in for the missing language
    finally:
        gated.gate.set()
        srv.stop()


def test_a_failing_request_does_not_fail_its_batch(translator):
    poison = int(0.9 * 16000)
    gated = GatedTranslator(translator, poison=poison)
    srv = Server(gated, port=0, opts=ServeOptions(max_wait_ms=3000), log_level="warning").start()
    try:
        files = [tiny.clip(0.7, 0), np.asarray(tiny.clip(0.9, 1)), tiny.clip(1.1, 2)]
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(_post, srv, "/v1/audio/translations", {"language": "fr"}, ("a.wav", _wav(a)), None)
                       for a in files]
            deadline = time.monotonic() + 30
            while _health(srv)["pending_segments"] + _health(srv)["queued_requests"] < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            gated.gate.set()
            results = [f.result() for f in futures]
        assert gated.calls == 4, "one batch of three, then each alone to find the failing one"
        assert [r[0] for r in results] == [200, 500, 200]
        assert "decoder blew up" in json.loads(results[1][2])["error"]["message"]
        expected = translator.translate([files[0], files[2]], src="fr")
        assert [json.loads(results[i][2])["text"] for i in (0, 2)] == expected
    finally:
        gated.gate.set()
        srv.stop()


def test_cli_serve_defaults_to_localhost():
    args = build_parser().parse_args(["serve", "--model", "m"])
    assert args.host == "127.0.0.1" and args.api_key is None and args.default_src is None


def test_cli_serve_decodes_every_batch_with_the_options_given(ckpt, monkeypatch, capsys):
    """`llast serve --num-beams 3`: the DecodeConfig the CLI made (the checkpoint's options with the one given)
    is what the batcher decodes every batch with, as it is; the loaded model's own cfg.decode is left alone."""
    import llast.serve

    seen = {}

    class Capture:  # Server, without binding a port or serving
        url = "http://127.0.0.1:0"

        def __init__(self, translator, host, port, opts, **kw):
            seen["translator"], seen["opts"] = translator, opts

        def serve_forever(self):
            pass

    monkeypatch.setattr(llast.serve, "Server", Capture)
    assert main(["serve", "--model", str(ckpt), "--num-beams", "3", "--dtype", "float32"]) == 0
    assert "llast serve: warmed up in" in capsys.readouterr().out  # a first decoding before clients come
    translator, decode = seen["translator"], seen["opts"].decode
    assert decode.num_beams == 3 and translator.cfg.decode.num_beams == 2
    assert decode == dataclasses.replace(translator.cfg.decode, num_beams=3)
    app = llast.serve.create_app(translator, seen["opts"])
    try:
        assert app.batcher.decode is decode
    finally:
        app.batcher.stop()


# ----------------------------------------------------------------------------- issue #32: the server stays up


def _speech_then_silence(seconds: float) -> np.ndarray:
    """A read sentence at 0.0 s, then digital silence up to `seconds` (a voicemail)."""
    from test_segment import speech_clips

    speech = speech_clips()[0]
    return np.concatenate([speech, np.zeros(int(seconds * 16000) - len(speech), np.float32)])


@pytest.mark.parametrize("seconds", [55.0, 3605.0])
def test_speech_then_silence_is_segmented_as_translate_does(translator, tmp_path, server_errors, seconds):
    """Speech at 0.0 s then silence, longer than the model's window: 200 with the segments and texts of
    `Translator.translate` (the same llast.segment plan), not a 500 for decoding it whole. The hour-long
    one passes the default limits (an hour of audio, 6 h x 2 x 48 kHz samples); its silence is not run
    through the speech detector (llast.segment.QUIET_LEVEL)."""
    path = tmp_path / "voicemail.flac"
    sf.write(path, _speech_then_silence(seconds), 16000, format="FLAC", subtype="PCM_16")
    opts = ServeOptions(api_key=KEY, default_src="fr", max_audio_seconds=3700)
    srv = Server(translator, port=0, opts=opts, log_level="warning").start()
    try:
        code, _, body = _post(srv, "/v1/audio/translations", {"response_format": "verbose_json"},
                              ("voicemail.flac", path.read_bytes()))
    finally:
        srv.stop()
    assert code == 200, body
    expected = translator.translate(path, src="fr", segments=True)
    got = json.loads(body)["segments"]
    assert len(got) == len(expected) >= 1 and got[0]["start"] < 1.0
    assert [(s["start"], s["end"], s["text"]) for s in got] == [(e.start, e.end, e.text) for e in expected]
    assert json.loads(body)["duration"] == pytest.approx(seconds, abs=0.01)
    assert not server_errors


def test_half_open_connections_do_not_starve_a_client_with_the_key(translator, server_errors):
    """Connections that never finish their headers (no key, nothing sent, or half a request line) are
    closed after header_timeout, and beyond a share of the connection cap the oldest is closed: /health
    and a valid translation still answer while 3x the cap of them is open."""
    opts = ServeOptions(api_key=KEY, default_src="fr", header_timeout=30.0)
    srv = Server(translator, port=0, opts=opts, max_connections=32, log_level="warning").start()
    sockets = []
    try:
        for i in range(96):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            if i % 2:
                s.sendall(b"POST /v1/audio/translations HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            sockets.append(s)
        assert _health(srv)["status"] == "ok"
        code, _, body = _post(srv, "/v1/audio/translations", {}, ("a.wav", _wav(tiny.clip(0.8))))
        assert code == 200, body
        assert _health(srv)["connections_closed_before_headers"] >= 96 - 16
    finally:
        for s in sockets:
            s.close()
        srv.stop()


def test_header_timeout_closes_a_silent_connection(translator):
    srv = Server(translator, port=0, opts=ServeOptions(header_timeout=0.5), log_level="warning").start()
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\n")  # never finished
        assert s.recv(100) == b""  # closed by the server after 0.5 s (a hang would end in the 10 s socket timeout)
        s.close()
    finally:
        srv.stop()


def test_an_unauthenticated_request_is_answered_and_its_connection_closed(server):
    s = _raw(server, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = b""
    while chunk := s.recv(4096):  # the server closes the connection after its 401
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 401") and b"connection: close" in reply.lower()
    s.close()


def test_oversized_request_headers_get_400(server):
    s = _raw(server, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert s.recv(100).split(b"\r\n")[0] in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 431 Request Header Fields Too Large")
    s.close()


def test_log_lines_quote_untrusted_fields(server):
    """A form field holding a newline cannot forge a line in the server's log."""
    import logging

    records = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    log = logging.getLogger("llast.serve")
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        code, _, body = _post(server, "/v1/audio/translations", {"language": "fr", "model": "m\n2026-01-01 FORGED llast ok"},
                              ("a.wav", _wav(tiny.clip(0.6))))
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert code == 200, body
    lines = [r.getMessage() for r in records]
    assert any("FORGED" in line for line in lines)
    assert all("\n" not in line for line in lines), lines


def test_speech_detection_waits_in_the_queue(translator):
    """A long upload takes its place in the queue before its speech detection runs: with max_queue=1 and
    one long upload held in planning, a second request gets 503 at once instead of more work."""
    gate = threading.Semaphore(0)  # holds the long upload's speech detection
    srv = Server(translator, port=0, opts=ServeOptions(default_src="fr", max_queue=1), log_level="warning").start()
    srv.app.ctx["gate"] = gate
    try:
        long = _wav(_speech_then_silence(40.0))
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(_post, srv, "/v1/audio/translations", {}, ("long.wav", long), None)
            deadline = time.monotonic() + 30
            while srv.app.batcher.reserved == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            code, headers, body = _post(srv, "/v1/audio/translations", {}, ("a.wav", _wav(tiny.clip(0.7))), None)
            assert code == 503 and "busy" in body
            gate.release()
            assert first.result()[0] == 200
        assert srv.app.batcher.reserved == 0
    finally:
        gate.release()
        srv.stop()
