"""`llast serve`: an HTTP translation server with dynamic batching (standard library only).

    POST /translate?src=fr&tgt=en[&task=transcribe][&num_beams=5]   body: audio bytes (wav/flac/mp3/ogg)
         -> 200 {"text": "...", "src": "fr", "tgt": "en", "task": "translate", "seconds": 3.2}
         -> 400 {"error": "..."} for unreadable audio or bad parameters
    GET  /health -> 200 {"status": "ok", "model": CKPT}

Requests that arrive while the model is busy (or within `max_wait_ms` of each other) are decoded
together in one batch, up to `decode.batch_size`; each request gets its own result.
"""

from __future__ import annotations

import json
import queue
import tempfile
import threading
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from llast.audio import load_audio
from llast.decode import split_long
from llast.errors import LlastError
from llast.processor import Example, language_name


class Batcher:
    """Collects (Example, decode overrides) requests from many threads and decodes them in batches."""

    def __init__(self, translator, max_wait_ms: float = 20.0):
        self.translator = translator
        self.max_wait = max_wait_ms / 1000
        self.queue: queue.Queue = queue.Queue()
        self.batches_run = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def submit(self, examples: list[Example], num_beams: int | None) -> Future:
        fut: Future = Future()
        self.queue.put((examples, num_beams, fut))
        return fut

    def _loop(self) -> None:
        limit = self.translator.cfg.decode.batch_size
        while True:
            items = [self.queue.get()]
            n = len(items[0][0])
            while n < limit:
                try:
                    item = self.queue.get(timeout=self.max_wait)
                except queue.Empty:
                    break
                items.append(item)
                n += len(item[0])
            # Requests with different beam sizes cannot share a generate() call.
            groups: dict = {}
            for item in items:
                groups.setdefault(item[1], []).append(item)
            for num_beams, group in groups.items():
                examples = [e for ex, _, _ in group for e in ex]
                overrides = {} if num_beams is None else {"num_beams": num_beams}
                try:
                    texts = self.translator.generate(examples, self.translator.decode_config(**overrides))
                except Exception as e:  # noqa: BLE001 - the error goes back to every waiting request
                    for _, _, fut in group:
                        fut.set_exception(e)
                    continue
                self.batches_run += 1
                i = 0
                for ex, _, fut in group:
                    fut.set_result(" ".join(t for t in texts[i : i + len(ex)] if t))
                    i += len(ex)


def make_server(translator, host: str = "127.0.0.1", port: int = 8000, max_wait_ms: float = 20.0, model_name: str = ""):
    batcher = Batcher(translator, max_wait_ms)
    max_bytes = 64 * 1024 * 1024

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, payload: dict) -> None:
            body = json.dumps(payload, ensure_ascii=False).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # quiet by default
            return

        def do_GET(self):
            if urlparse(self.path).path == "/health":
                self._reply(200, {"status": "ok", "model": model_name, "batches_run": batcher.batches_run})
            else:
                self._reply(404, {"error": f"unknown path {self.path}"})

        def do_POST(self):
            url = urlparse(self.path)
            if url.path != "/translate":
                return self._reply(404, {"error": f"unknown path {url.path}"})
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                src = q["src"]
                task = q.get("task", "translate")
                tgt = src if task == "transcribe" else q.get("tgt", "en")
                language_name(src), language_name(tgt)
                if task not in ("translate", "transcribe"):
                    raise ValueError(f"task must be translate or transcribe, not {task!r}")
                num_beams = int(q["num_beams"]) if "num_beams" in q else None
                length = int(self.headers.get("Content-Length", 0))
                if not 0 < length <= max_bytes:
                    raise ValueError(f"request body must hold the audio file (1 byte to {max_bytes} bytes), got {length}")
                data = self.rfile.read(length)
                with tempfile.NamedTemporaryFile(suffix=Path(q.get("name", "audio")).suffix or None) as f:
                    f.write(data)
                    f.flush()
                    try:
                        audio = load_audio(f.name)
                    except LlastError as e:
                        raise ValueError(str(e).replace(f.name, "request audio")) from None
            except KeyError as e:
                return self._reply(400, {"error": f"missing query parameter {e}"})
            except (LlastError, ValueError) as e:
                return self._reply(400, {"error": str(e)})
            chunks = split_long(audio, translator.cfg.model.encoder.max_seconds)
            fut = batcher.submit([Example(c, src, tgt, task) for c in chunks], num_beams)
            try:
                text = fut.result()
            except Exception as e:  # noqa: BLE001
                return self._reply(500, {"error": f"decoding failed: {e}"})
            self._reply(200, {"text": text, "src": src, "tgt": tgt, "task": task, "seconds": round(len(audio) / 16000, 3)})

    return ThreadingHTTPServer((host, port), Handler)


def serve_cli(args) -> int:
    from llast.checkpoint import load_model

    translator = load_model(args.model, dtype=args.dtype)
    server = make_server(translator, args.host, args.port, args.max_wait_ms, model_name=args.model)
    print(f"llast serve: {args.model} on http://{args.host}:{server.server_address[1]}  (POST /translate?src=..&tgt=..)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
