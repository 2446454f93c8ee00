"""`llast serve` under the cheap attacks of issue #32 (docs/reliability.md), against the real CLI server.

    python bench/serve_attack.py --model llast-mini --out bench/results/serve_attack.json

1. Idle latency of a valid request (a 5 s LibriVox sentence, transcribed; the key sent), 3 times.
2. 300 connections without a key that never finish their headers, plus 10 uploads (with the key) of an
   hour of digital silence (29 KB FLACs), all at once; the valid request again while they are open.
3. Server RSS before and after.
4. A 55 s and a 3,590 s recording of speech then silence, through the server (verbose_json) and through
   `llast translate --format json`: the same segments and texts?
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

import serve_load  # bench/serve_load.py: the multipart upload (run as python bench/serve_attack.py)

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
KEY = "bench-key"


def post(url: str, fields: dict, name: str, data: bytes, key: str | None = KEY, timeout: float = 1800):
    return serve_load.post(url, fields, name, data, timeout=timeout, key=key)


def flac(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llast-mini")
    ap.add_argument("--out", default="bench/results/serve_attack.json")
    ap.add_argument("--port", type=int, default=8791)
    ap.add_argument("--half-open", type=int, default=300)
    ap.add_argument("--silent", type=int, default=10)
    ap.add_argument("--long-seconds", type=float, default=3590.0)
    a = ap.parse_args()
    speech = sf.read(sorted(LIBRIVOX.glob("*.wav"))[0], dtype="float32")[0]
    llast = [sys.executable, "-m", "llast.cli"]
    server = subprocess.Popen(llast + ["serve", "--model", a.model, "--api-key", KEY, "--port", str(a.port),
                                       "--default-src", "en"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{a.port}"
    report: dict = {"model": a.model, "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": "),
                    "load_before": os.getloadavg()}
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start: {server.stdout.read()[-3000:]}")
                time.sleep(1)
        clip = flac(speech)
        valid = lambda: post(f"{url}/v1/audio/transcriptions", {"language": "en"}, "clip.flac", clip)  # noqa: E731
        valid()  # warm-up
        idle = [valid() for _ in range(3)]
        assert all(code == 200 for code, _, _ in idle), idle
        report["idle_latency_s"] = [round(t, 2) for _, _, t in idle]
        report["rss_before_mb"] = round(rss_mb(server.pid), 1)

        # the attack: half-open connections without a key, and hour-long silent uploads with it
        socks = []
        for i in range(a.half_open):
            try:
                s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
                if i % 2:
                    s.sendall(b"POST /v1/audio/translations HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
            except OSError:
                pass
        silent = flac(np.zeros(3600 * 16000, np.float32))
        report["silent_upload_bytes"] = len(silent)
        pool = ThreadPoolExecutor(a.silent)
        silent_futures = [pool.submit(post, f"{url}/v1/audio/translations", {"language": "fr"}, "silence.flac", silent)
                          for _ in range(a.silent)]
        time.sleep(1.0)
        loaded = [valid() for _ in range(3)]
        health = json.loads(urllib.request.urlopen(f"{url}/health", timeout=30).read())
        silent_results = [f.result() for f in silent_futures]
        for s in socks:
            s.close()
        report["under_attack"] = {
            "half_open_connections_opened": len(socks),
            "valid_latency_s": [round(t, 2) for _, _, t in loaded], "valid_status": [c for c, _, _ in loaded],
            "ratio_median_to_idle": round(statistics.median(t for _, _, t in loaded) / statistics.median(t for _, _, t in idle), 2),
            "silent_uploads_status": [c for c, _, _ in silent_results],
            "silent_uploads_seconds": [round(t, 1) for _, _, t in silent_results],
            "connections_closed_before_headers": health.get("connections_closed_before_headers"),
        }
        time.sleep(2)
        report["rss_after_mb"] = round(rss_mb(server.pid), 1)
        report["rss_change"] = round(report["rss_after_mb"] / report["rss_before_mb"] - 1, 3)

        # speech then silence, through the server and through `llast translate --format json`
        report["speech_then_silence"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for seconds in (55.0, a.long_seconds):
                x = np.concatenate([speech, np.zeros(int(seconds * 16000) - len(speech), np.float32)])
                path = Path(tmp) / f"voicemail_{int(seconds)}.flac"
                sf.write(path, x, 16000, format="FLAC", subtype="PCM_16")
                code, body, took = post(f"{url}/v1/audio/transcriptions", {"language": "en", "response_format": "verbose_json"},
                                        path.name, path.read_bytes())
                t0 = time.monotonic()
                cli = subprocess.run(llast + ["translate", "--model", a.model, "--src", "en", "--task", "transcribe",
                                              "--format", "json", str(path)], capture_output=True, text=True)
                cli_seconds = time.monotonic() - t0
                ours = [(s["start"], s["end"], s["text"]) for s in json.loads(body)["segments"]] if code == 200 else None
                theirs = [(s["start"], s["end"], s["text"]) for s in json.loads(cli.stdout.splitlines()[-1])["segments"]]
                report["speech_then_silence"][f"{seconds:g}s"] = {
                    "server_status": code, "server_seconds": round(took, 1), "cli_seconds": round(cli_seconds, 1),
                    "segments": len(theirs), "same_segments_and_texts": ours == theirs, "server": ours, "cli": theirs}
                report["rss_after_long_mb"] = round(rss_mb(server.pid), 1)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    report["load_after"] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
