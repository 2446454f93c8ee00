"""The live page in a real browser: Debian's chromium (headless, driven by selenium) against `llast serve` with a
tiny checkpoint. Chromium's fake media flags play a WAV of espeak-ng sentences as the microphone."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import srt

import tiny
from llast.decode import load_model
from llast.segment import SegmentOptions, segment
from llast.serve import Server, ServeOptions

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SEG_OPTS = SegmentOptions(max_seconds=10)
SENTENCES = ["Bonjour à tous, merci d'être venus.", "Le train part à huit heures.", "Nous parlerons du climat demain."]


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """Three spoken sentences with pauses of 1.2 s, as a 16 kHz PCM16 WAV (about 9 s)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    root = tmp_path_factory.mktemp("speech")
    rng = np.random.default_rng(0)
    parts = [np.zeros(16000, np.float32)]
    for i, text in enumerate(SENTENCES):
        raw = root / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", "fr", "-w", str(raw), text], check=True)
        wav, rate = sf.read(raw, dtype="float32")
        import soxr

        parts += [soxr.resample(wav, rate, 16000), np.zeros(int(1.2 * 16000), np.float32)]
    wav = np.concatenate(parts + [np.zeros(16000, np.float32)])
    wav += (1e-3 * rng.standard_normal(len(wav))).astype(np.float32)
    path = root / "talk.wav"
    sf.write(path, wav, 16000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def server(tiny_dirs, tmp_path_factory):
    translator = load_model(tiny.lora_checkpoint(tiny_dirs, tmp_path_factory.mktemp("browser") / "ckpt"), dtype="float32")
    srv = Server(translator, port=0, opts=ServeOptions(max_wait_ms=20), seg_opts=SEG_OPTS, log_level="warning").start()
    yield srv
    srv.stop()


def _browser(microphone: Path):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Debian chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--use-file-for-fake-audio-capture={microphone}%noloop", "--autoplay-policy=no-user-gesture-required"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def _wait(driver, script: str, timeout: float):
    """Poll a JavaScript expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script("return " + script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"the page never got to: {script} (status: {driver.find_element('id', 'status').text!r}, "
                         f"error: {driver.find_element('id', 'error').text!r})")


def _rows(driver) -> list[dict]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#segments tbody tr')].map(r => ({start: +r.dataset.start, "
        "end: +r.dataset.end, done: r.dataset.done, text: r.cells[3].textContent, latency: r.dataset.latency}))")


def test_microphone_segments_appear_in_order_with_their_times(server, speech):
    expected = segment(speech, SEG_OPTS)
    assert len(expected) == len(SENTENCES)
    driver = _browser(speech)
    try:
        driver.get(server.url + "/")
        driver.find_element("id", "record").click()
        _wait(driver, "document.getElementById('status').dataset.state === 'recording'", 30)
        # segments appear while recording: the first before the microphone's audio has ended
        _wait(driver, "document.querySelectorAll('#segments tbody tr').length >= 2", 60)
        _wait(driver, f"document.querySelectorAll('#segments tbody tr[data-done=\"1\"]').length >= {len(SENTENCES)}", 60)
        driver.find_element("id", "stop").click()
        _wait(driver, "document.getElementById('status').dataset.state === 'done'", 60)
        rows = _rows(driver)
    finally:
        driver.quit()
    assert len(rows) == len(expected) and all(r["done"] == "1" for r in rows)
    for prev, row in zip(rows, rows[1:]):
        assert prev["end"] <= row["start"]
    for row, seg in zip(rows, expected):  # the page's stream starts within a moment of the fake microphone
        assert abs(row["start"] - seg.start) < 0.5 and abs(row["end"] - seg.end) < 0.5
        assert abs((row["end"] - row["start"]) - seg.seconds) < 0.3
        assert float(row["latency"]) >= 0


def test_a_picked_file_gives_the_segments_of_the_file_and_an_srt(server, speech):
    expected = segment(speech, SEG_OPTS)
    driver = _browser(speech)
    try:
        driver.get(server.url + "/")
        driver.find_element("id", "file").send_keys(str(speech))
        _wait(driver, "document.getElementById('status').dataset.state === 'done'", 60)
        rows = _rows(driver)
        cues = list(srt.parse(driver.execute_script("return srtText()")))
    finally:
        driver.quit()
    assert [(r["start"], r["end"]) for r in rows] == [(s.start, s.end) for s in expected]
    with_text = [r for r in rows if r["text"].strip()]
    assert [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in cues] == [
        (r["start"], r["end"], " ".join(r["text"].split())) for r in with_text]
