"""`llast serve`: HTTP translation with dynamic batching, on a tiny checkpoint."""

import io
import json
import threading
import urllib.error
import urllib.request

import pytest
import soundfile as sf
import torch

import tiny
from llast.checkpoint import load_model, save_checkpoint
from llast.lora import apply_lora
from llast.model import build_model
from llast.serve import make_server


@pytest.fixture(scope="module")
def server(tiny_dirs, tmp_path_factory):
    cfg = tiny.tiny_config(tiny_dirs["whisper"], tiny_dirs["llama"])
    cfg.decode.max_new_tokens = 5
    cfg.decode.num_beams = 2
    torch.manual_seed(0)
    model = build_model(cfg.model)
    apply_lora(model, cfg.model)
    ckpt = save_checkpoint(model, cfg, tmp_path_factory.mktemp("serve") / "ckpt")
    translator = load_model(ckpt, dtype="float32")
    srv = make_server(translator, port=0, max_wait_ms=200)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, translator
    srv.shutdown()


def _post(srv, audio_bytes, query):
    url = f"http://127.0.0.1:{srv.server_address[1]}/translate?{query}"
    req = urllib.request.Request(url, data=audio_bytes, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wav(seconds, seed):
    buf = io.BytesIO()
    sf.write(buf, tiny.clip(seconds, seed), 16000, format="WAV")
    return buf.getvalue()


def test_concurrent_requests_are_batched_and_match_translate(server):
    srv, translator = server
    clips = [(1.0, 0), (0.6, 1), (1.4, 2)]
    results = [None] * len(clips)

    def send(i):
        results[i] = _post(srv, _wav(*clips[i]), "src=fr&tgt=en")

    before = _health(srv)["batches_run"]
    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = translator.translate([tiny.clip(s, seed) for s, seed in clips], src="fr", tgt="en")
    assert [r[0] for r in results] == [200, 200, 200]
    assert [r[1]["text"] for r in results] == expected
    assert _health(srv)["batches_run"] - before < len(clips), "concurrent requests share batches"


def _health(srv):
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.server_address[1]}/health", timeout=10) as r:
        return json.loads(r.read())


def test_bad_requests_get_clear_400s(server):
    srv, _ = server
    code, body = _post(srv, b"RIFF not really audio", "src=fr&tgt=en")
    assert code == 400 and "error" in body
    code, body = _post(srv, _wav(0.5, 0), "tgt=en")
    assert code == 400 and "src" in body["error"]
    code, body = _post(srv, _wav(0.5, 0), "src=xx")
    assert code == 400 and "xx" in body["error"]
