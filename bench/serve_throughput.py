"""Serving throughput of `llast serve` (issue #29): N concurrent clients, each sending test clips one after
another to /v1/audio/translations, against a server in its own process; requests per minute and latency
percentiles, for each N given.

    python bench/serve_throughput.py --model llast-mini --clips data/synth4/de/clips_16k --clients 1,8 \
        --requests 32 --out bench/results/serve_throughput.json -- --dtype gguf

Every N sends the same `--requests` clips (the first ones of --clips, sorted), so the runs compare. The
server batches the segments of concurrent requests (llast.batcher); one client never has more than one
request in flight.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import serve_load  # bench/serve_load.py: the multipart upload and the wait for the server (run from bench/)


def run(url: str, clips: list[Path], clients: int, src: str) -> dict:
    """Send `clips` from `clients` threads (clip i by client i % clients, each in order); timings."""
    latencies: list[float] = []
    codes: list[int] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        for clip in clips[k::clients]:
            code, _, took = serve_load.post(f"{url}/v1/audio/translations", {"model": "m", "language": src},
                                            clip.name, clip.read_bytes())
            with lock:
                codes.append(code)
                latencies.append(took)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    lat = sorted(latencies)
    return {"clients": clients, "requests": len(lat), "ok": codes.count(200), "wall_s": round(wall, 2),
            "requests_per_min": round(60 * len(lat) / wall, 2), "p50_s": round(statistics.median(lat), 3),
            "p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3), "max_s": round(lat[-1], 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--clips", required=True, help="folder of 16 kHz WAV clips")
    p.add_argument("--clients", default="1,8", help="comma-separated numbers of concurrent clients")
    p.add_argument("--requests", type=int, default=32, help="clips sent per run")
    p.add_argument("--src", default="de")
    p.add_argument("--port", type=int, default=8771)
    p.add_argument("--out", default=None)
    p.add_argument("serve_args", nargs="*", help="after --: options of llast serve (e.g. --dtype gguf)")
    a = p.parse_args()
    clips = sorted(Path(a.clips).glob("*.wav"))[: a.requests]
    audio_s = sum(__import__("soundfile").info(c).duration for c in clips)
    cmd = [sys.executable, "-m", "llast.cli", "serve", "--model", a.model, "--port", str(a.port), "--default-src",
           a.src, *a.serve_args]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{a.port}"
    try:
        serve_load.wait_until_up(server, a.port)
        run(url, clips[:2], 1, a.src)  # warm-up (first calls allocate)
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "?")
        report = {"command": " ".join(sys.argv), "server": " ".join(cmd[1:]), "cpu": cpu, "clips": len(clips),
                  "audio_s": round(audio_s, 1), "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": []}
        for n in (int(x) for x in a.clients.split(",")):
            r = run(url, clips, n, a.src)
            r["rtf"] = round(r["wall_s"] / audio_s, 3)
            report["runs"].append(r)
            print(json.dumps(r), flush=True)
    finally:
        server.terminate()
        server.wait(30)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
