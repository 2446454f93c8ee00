"""Load on `llast serve` (docs/longform.md): 100 concurrent requests, valid and invalid mixed, with two
10-minute uploads and 20 clients that send headers and never the body, against a server in its own process.

    python bench/serve_load.py --model CKPT --clips /tmp/synth/de/clips_16k --long /tmp/lf/10/long.wav

Reports: status codes, whether every valid request got the text `Translator.translate` gives for the same
file, latency of the short requests, the server's peak resident memory (VmHWM) and whether it is still up.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf


def post(url: str, fields: dict, name: str, data: bytes, timeout: float = 900,
         key: str | None = None) -> tuple[int, str, float]:
    """(status, body, seconds) of a multipart upload of `data` as file `name` with form `fields`."""
    boundary = uuid.uuid4().hex
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items())
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n').encode() + data
    body += f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(), time.monotonic() - t0
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), time.monotonic() - t0


def wide_flac(seconds: int = 600) -> bytes:
    """10 minutes x 8 channels x 96 kHz of near-silence: a small file that is costly to decode."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", 96000, 8, "PCM_16", format="FLAC") as f:
        block = np.zeros((96000, 8), np.float32)
        for _ in range(seconds):
            f.write(block)
    return buf.getvalue()


def invalid_uploads() -> list[tuple[str, bytes, dict]]:
    def wav(x, rate=16000, fmt="WAV", subtype="PCM_16"):
        buf = io.BytesIO()
        sf.write(buf, x, rate, format=fmt, subtype=subtype)
        return buf.getvalue()

    return [
        ("junk.wav", b"RIFF\x00\x00not audio at all", {}),
        ("empty.wav", b"", {}),
        ("notes.txt", b"hello, this is text", {}),
        ("silent.wav", wav(np.zeros(16000, np.float32)), {}),
        ("wide.flac", wide_flac(), {}),
        ("ok.wav", wav(0.1 * np.sin(np.arange(16000) / 5).astype(np.float32)), {"language": "xx"}),
        ("ok.wav", wav(0.1 * np.sin(np.arange(16000) / 5).astype(np.float32)), {"response_format": "docx"}),
    ]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--clips", required=True, help="folder of 16 kHz WAV speech clips")
    p.add_argument("--long", required=True, help="a long recording (two uploads of it)")
    p.add_argument("--src", default="de")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--max-queue", type=int, default=128, help="the server's --max-queue (64 would answer some of the 100 with 503)")
    a = p.parse_args()
    clips = sorted(Path(a.clips).glob("*.wav"))[:20]
    import llast

    translator = llast.load_model(a.model, dtype="float32")
    expected = dict(zip(clips, translator.translate(clips, src=a.src)))
    server = subprocess.Popen([sys.executable, "-m", "llast.cli", "serve", "--model", a.model, "--port", str(a.port),
                               "--dtype", "float32", "--read-timeout", "10", "--default-src", a.src,
                               "--max-queue", str(a.max_queue)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_until_up(server, a.port)
        report = run_load(a, server, clips, expected)
    finally:
        server.terminate()
        server.wait(30)
    print(json.dumps(report, indent=1))


def wait_until_up(server, port: int) -> None:
    while True:
        if server.poll() is not None:
            sys.exit(f"server did not start (exit status {server.returncode})")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return
        except OSError:
            time.sleep(0.5)


def run_load(a, server, clips, expected) -> dict:
    url = f"http://127.0.0.1:{a.port}/v1/audio/translations"
    stalled = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", a.port))
        s.sendall(b"POST /v1/audio/translations HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 1000000\r\n\r\n--b\r\n")
        stalled.append(s)
    bad = invalid_uploads()
    long_bytes = Path(a.long).read_bytes()
    jobs = [("long", None)] * 2 + [("bad", bad[i % len(bad)]) for i in range(28)] + [("good", clips[i % len(clips)]) for i in range(70)]
    rng = np.random.default_rng(0)
    jobs = [jobs[i] for i in rng.permutation(len(jobs))]

    def send(job):
        kind, x = job
        if kind == "long":
            return post(url, {"response_format": "srt"}, "long.wav", long_bytes)
        if kind == "bad":
            return post(url, {"model": "m", **x[2]}, x[0], x[1])
        return post(url, {"model": "m"}, x.name, x.read_bytes())

    t0 = time.monotonic()
    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(send, jobs))
    total = time.monotonic() - t0
    good = [(x, r) for (k, x), r in zip(jobs, results) if k == "good"]
    right = sum(1 for x, (code, body, _) in good if code == 200 and json.loads(body)["text"] == expected[x])
    bad_codes = sorted({r[0] for (k, _), r in zip(jobs, results) if k == "bad"})
    long_codes = [r[0] for (k, _), r in zip(jobs, results) if k == "long"]
    stalled_replies = [s.recv(64).split(b"\r\n")[0].decode() for s in stalled]
    alive = server.poll() is None
    with urllib.request.urlopen(f"http://127.0.0.1:{a.port}/health", timeout=10) as r:
        health = json.loads(r.read())
    report = {
        "requests": len(jobs), "valid_short": len(good), "valid_short_right_text": right,
        "valid_short_other": [{"file": x.name, "status": code, "got": body[:200], "expected": expected[x]}
                              for x, (code, body, _) in good if code != 200 or json.loads(body)["text"] != expected[x]],
        "invalid": sum(1 for k, _ in jobs if k == "bad"), "invalid_status_codes": bad_codes,
        "long_10min_status": long_codes, "stalled_clients": len(stalled), "stalled_replies": sorted(set(stalled_replies)),
        "short_latency_s_median": round(float(np.median([r[2] for _, r in good])), 2),
        "short_latency_s_max": round(max(r[2] for _, r in good), 2),
        "long_latency_s": [round(r[2], 1) for (k, _), r in zip(jobs, results) if k == "long"],
        "wall_s": round(total, 1), "server_peak_rss_mb": round(peak_rss_mb(server.pid), 1),
        "server_up": alive and health["status"] == "ok", "batches_run": health["batches_run"],
    }
    for s in stalled:
        s.close()
    return report


if __name__ == "__main__":
    main()
