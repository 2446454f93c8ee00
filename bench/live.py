"""Live translation measurements (docs/live.md): latency from the end of speech to its translation, through
the terminal (`llast translate --live -`), the WebSocket (/v1/realtime) and the page (chromium, fake microphone);
and a long stream through the WebSocket compared with `llast translate --format json` of the same file.

    python bench/live.py stream --minutes 10 --out /tmp/live10.wav          # French speech with pauses
    python bench/live.py terminal --wav /tmp/live10.wav --model llast-mini --out results.json [-- decode args]
    python bench/live.py websocket --wav /tmp/live10.wav --url ws://127.0.0.1:8000 --out results.json
    python bench/live.py page --wav /tmp/live10.wav --url http://127.0.0.1:8000 --out results.json
    python bench/live.py compare --wav /tmp/live60.wav --url ws://127.0.0.1:8000 --offline offline.json \
        --server-pid PID --out results.json [--fast]

Latency of a segment: the time its text arrives minus the time the audio of the end of its speech
(segment end - pad: the padding is silence) had been delivered, audio being delivered in real time.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000
BLOCK = 0.1  # seconds of audio per write / append, as a microphone delivers it


def build_stream(minutes: float, out: Path, lang: str = "fr", seed: int = 0) -> dict:
    """Sentences of the Debian corpora spoken by espeak-ng (voices, speeds and pitches varied, a noise floor),
    separated by pauses of 0.6 to 2.5 s, until `minutes` of audio."""
    import soxr

    from llast import synth

    rng = np.random.default_rng(seed)
    pairs = synth.language_pairs(lang)
    voices = [lang, f"{lang}+m3", f"{lang}+f2", f"{lang}+m7", f"{lang}+f4"]
    parts, total, n, texts = [np.zeros(RATE // 2, np.float32)], 0.5, 0, []
    tmp = out.with_suffix(".part.wav")
    while total < minutes * 60:
        text = pairs[int(rng.integers(len(pairs)))][0]
        subprocess.run(["espeak-ng", "-v", voices[n % len(voices)], "-s", str(int(rng.integers(140, 180))),
                        "-p", str(int(rng.integers(35, 65))), "-w", str(tmp), text], check=True)
        wav, rate = sf.read(tmp, dtype="float32")
        wav = soxr.resample(wav, rate, RATE).astype(np.float32)
        pause = np.zeros(int(rng.uniform(0.6, 2.5) * RATE), np.float32)
        parts += [wav, pause]
        total += (len(wav) + len(pause)) / RATE
        texts.append(text)
        n += 1
    tmp.unlink()
    audio = np.concatenate(parts)
    audio += (2e-3 * rng.standard_normal(len(audio))).astype(np.float32)
    sf.write(out, np.clip(audio, -1, 1), RATE, subtype="PCM_16")
    return {"file": str(out), "seconds": round(len(audio) / RATE, 1), "sentences": n}


def _pcm(path: Path) -> bytes:
    wav, rate = sf.read(path, dtype="int16")
    assert rate == RATE and wav.ndim == 1, "a 16 kHz mono WAV"
    return wav.astype("<i2").tobytes()


def _paced(pcm: bytes, write, t0: float, speed: float = 1.0) -> None:
    """write(chunk) for each BLOCK of audio at its real-time moment (speed > 1: faster)."""
    step = int(BLOCK * RATE) * 2
    for k, i in enumerate(range(0, len(pcm), step)):
        delay = t0 + k * BLOCK / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        write(pcm[i : i + step])


def _summary(latencies: list[float], extra: dict) -> dict:
    x = np.asarray(latencies)
    return {**extra, "segments": len(x), "latency_p50_s": round(float(np.percentile(x, 50)), 3) if len(x) else None,
            "latency_p95_s": round(float(np.percentile(x, 95)), 3) if len(x) else None,
            "latency_max_s": round(float(x.max()), 3) if len(x) else None}


def terminal(args) -> dict:
    """`llast translate --live --format json -` fed in real time on stdin."""
    pcm = _pcm(args.wav)
    cmd = [sys.executable, "-m", "llast.cli", "translate", "--live", "--model", args.model, "--src", args.src,
           "--format", "json", *args.decode, "-"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    time.sleep(args.warmup)  # the model loads before audio flows (as it would before a talk starts)
    t0 = time.monotonic()
    rows = []

    progress = open(args.out.with_suffix(".progress.jsonl"), "w")

    def read():
        for line in proc.stdout:
            rows.append((time.monotonic(), json.loads(line)))
            seg = rows[-1][1]  # written as it comes: a run stopped early keeps what it measured
            progress.write(json.dumps({**seg, "latency_s": round(rows[-1][0] - (t0 + seg["end"] - args.pad), 3)}) + "\n")
            progress.flush()

    reader = threading.Thread(target=read)
    reader.start()
    _paced(pcm, lambda b: (proc.stdin.write(b), proc.stdin.flush()), t0)
    proc.stdin.close()
    reader.join()
    proc.wait()
    lat = [t - (t0 + seg["end"] - args.pad) for t, seg in rows]
    return _summary(lat, {"path": "terminal", "command": " ".join(cmd), "per_segment": [
        {"start": s["start"], "end": s["end"], "latency_s": round(x, 3), "text": s["text"]} for (_, s), x in zip(rows, lat)]})


def _ws(url: str, key: str | None):
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return connect(f"{url}/v1/realtime?intent=transcription", additional_headers=headers, open_timeout=30,
                   max_size=None, close_timeout=5,
                   ping_interval=None)  # the server stops reading a stream that sends faster than it decodes


def _start_session(ws, src: str) -> None:
    assert json.loads(ws.recv())["type"] == "transcription_session.created"
    ws.send(json.dumps({"type": "transcription_session.update", "session": {"input_audio_transcription": {"language": src}}}))
    event = json.loads(ws.recv())
    assert event["type"] == "transcription_session.updated", event


def _collect(ws, rows: list, errors: list, done: threading.Event) -> None:
    """Results and errors as they come, until llast.commit.done and every committed item has its result."""
    committed, finished = set(), False
    while not (finished and committed <= {r[1]["item_id"] for r in rows}):
        event = json.loads(ws.recv())
        kind = event["type"]
        if kind == "input_audio_buffer.committed":
            committed.add(event["item_id"])
        elif kind.startswith("conversation.item.input_audio_transcription."):
            rows.append((time.monotonic(), event))
        elif kind == "llast.commit.done":
            finished = True
        elif kind == "error":
            errors.append(event["error"])
    done.set()


def websocket(args) -> dict:
    """/v1/realtime, appends of BLOCK paced in real time."""
    pcm = _pcm(args.wav)
    rows, errors, done = [], [], threading.Event()
    with _ws(args.url, args.key) as ws:
        _start_session(ws, args.src)
        reader = threading.Thread(target=_collect, args=(ws, rows, errors, done))
        reader.start()
        t0 = time.monotonic()
        _paced(pcm, lambda b: ws.send(json.dumps({"type": "input_audio_buffer.append",
                                                    "audio": base64.b64encode(b).decode()})), t0)
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        reader.join()
    lat = [t - (t0 + e["end"] - args.pad) for t, e in rows]
    return _summary(lat, {"path": "websocket", "errors": errors, "per_segment": [
        {"start": e["start"], "end": e["end"], "latency_s": round(x, 3), "text": e.get("transcript")}
        for (_, e), x in zip(rows, lat)]})


def page(args) -> dict:
    """The page at / in headless chromium; the WAV is its microphone; the page measures each row's latency."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--use-file-for-fake-audio-capture={Path(args.wav).resolve()}%noloop"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    seconds = sf.info(args.wav).duration
    try:
        driver.get(args.url + "/")
        driver.find_element("id", "src").clear()
        driver.find_element("id", "src").send_keys(args.src)
        driver.find_element("id", "record").click()
        time.sleep(seconds + 1.0)
        driver.find_element("id", "stop").click()
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline and driver.execute_script(
                "return document.getElementById('status').dataset.state") != "done":
            time.sleep(1.0)
        rows = driver.execute_script(
            "return [...document.querySelectorAll('#segments tbody tr')].map(r => ({start: +r.dataset.start, "
            "end: +r.dataset.end, latency: r.dataset.latency, text: r.cells[3].textContent}))")
        state = driver.execute_script("return document.getElementById('status').textContent")
    finally:
        driver.quit()
    lat = [float(r["latency"]) for r in rows if r["latency"] is not None]
    return _summary(lat, {"path": "page", "final_status": state, "rows": len(rows), "per_segment": rows})


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def compare(args) -> dict:
    """A long stream through /v1/realtime (as fast as the server takes it, or paced), the server's RSS sampled
    every 10 s; segments and texts against `llast translate --format json` of the same file."""
    pcm = _pcm(args.wav)
    rows, errors, done = [], [], threading.Event()
    rss: list[tuple[float, float]] = []

    def sample():
        while not done.is_set():
            rss.append((round(time.monotonic() - t0, 1), round(_rss_mb(args.server_pid), 1)))
            done.wait(10)

    t0 = time.monotonic()
    threading.Thread(target=sample, daemon=True).start()
    with _ws(args.url, args.key) as ws:
        _start_session(ws, args.src)
        reader = threading.Thread(target=_collect, args=(ws, rows, errors, done))
        reader.start()
        send = lambda b: ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b).decode()}))
        if args.fast:
            step = int(BLOCK * RATE) * 2
            for i in range(0, len(pcm), step):
                send(pcm[i : i + step])
        else:
            _paced(pcm, send, t0)
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        reader.join()
    offline = json.loads(Path(args.offline).read_text())["segments"]
    live = [{"start": e["start"], "end": e["end"], "text": e.get("transcript")} for _, e in rows]
    same_count = len(live) == len(offline)
    worst = max((max(abs(a["start"] - b["start"]), abs(a["end"] - b["end"])) for a, b in zip(live, offline)), default=0.0)
    texts_equal = sum(a["text"] == b["text"] for a, b in zip(live, offline))
    values = [m for _, m in rss]
    quarter = max(1, len(values) // 4)
    return {"path": "websocket-compare", "audio_s": round(len(pcm) / 2 / RATE, 1), "wall_s": round(time.monotonic() - t0, 1),
            "segments_live": len(live), "segments_offline": len(offline), "same_count": same_count,
            "worst_boundary_diff_s": round(worst, 3), "texts_equal": texts_equal, "errors": errors,
            "rss_mb_first_quarter_max": max(values[:quarter]) if values else None,
            "rss_mb_last_quarter_max": max(values[-quarter:]) if values else None,
            "rss_mb_peak": max(values) if values else None, "rss_mb_samples": rss,
            "differing": [(a, b) for a, b in zip(live, offline) if a != b][:20]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stream")
    s.add_argument("--minutes", type=float, default=10)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--lang", default="fr")
    s.add_argument("--seed", type=int, default=0)
    for name in ("terminal", "websocket", "page", "compare"):
        q = sub.add_parser(name)
        q.add_argument("--wav", type=Path, required=True)
        q.add_argument("--src", default="fr")
        q.add_argument("--pad", type=float, default=0.2, help="the segments' padding (the server's or --pad)")
        q.add_argument("--out", type=Path, required=True)
        q.add_argument("--url", default="ws://127.0.0.1:8000" if name in ("websocket", "compare") else "http://127.0.0.1:8000")
        q.add_argument("--key", default=None)
        q.add_argument("--model", default="llast-mini")
        q.add_argument("--warmup", type=float, default=60.0, help="terminal: seconds to let the model load")
        q.add_argument("--drain", type=float, default=3600.0, help="page: seconds to wait for the last results")
        q.add_argument("--offline", help="compare: `llast translate --format json` output of the same WAV")
        q.add_argument("--server-pid", type=int, default=None)
        q.add_argument("--fast", action="store_true", help="compare: send as fast as the server reads")
        q.add_argument("decode", nargs="*", help="terminal: more `llast translate` options (after --)")
    args = p.parse_args()
    if args.cmd == "stream":
        result = build_stream(args.minutes, args.out, args.lang, args.seed)
    else:
        result = {"terminal": terminal, "websocket": websocket, "page": page, "compare": compare}[args.cmd](args)
        result["machine"] = f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_segment", "rss_mb_samples", "differing")},
                     ensure_ascii=False))


if __name__ == "__main__":
    main()
