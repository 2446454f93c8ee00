// llast live page: microphone or file -> /v1/realtime (OpenAI Realtime transcription-session events) -> segments.
"use strict";

const $ = (id) => document.getElementById(id);
const PAD_S = 0.2; // the server's turn_detection.prefix_padding_ms, read from the session (below)

let ws = null;         // the WebSocket of the current run
let run = null;        // {mode: "mic" | "file", rate, sent (samples), marks [[audio s, ms]], pad, ...}
let segments = [];     // [{item, start, end, text, done, row}] in stream order

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text || state;
}

function showError(message) {
  $("error").textContent = message;
}

function fmt(seconds) {
  const ms = Math.round(seconds * 1000);
  const h = Math.floor(ms / 3600000), m = Math.floor(ms / 60000) % 60, s = Math.floor(ms / 1000) % 60;
  return (h ? h + ":" : "") + String(m).padStart(2, "0") + ":" + String(s).padStart(2, "0") + "." +
    String(ms % 1000).padStart(3, "0");
}

function srtTime(seconds) {
  const ms = Math.round(seconds * 1000);
  const h = Math.floor(ms / 3600000), m = Math.floor(ms / 60000) % 60, s = Math.floor(ms / 1000) % 60;
  return [h, m, s].map((x) => String(x).padStart(2, "0")).join(":") + "," + String(ms % 1000).padStart(3, "0");
}

function toBase64(int16) {
  const bytes = new Uint8Array(int16.buffer, int16.byteOffset, int16.byteLength);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function toPcm16(float32) {
  const out = new Int16Array(float32.length);
  for (let i = 0; i < float32.length; i++) { // exact for audio that was PCM16 (a WAV file)
    out[i] = Math.max(-32768, Math.min(32767, Math.round(float32[i] * 32768)));
  }
  return out;
}

function send(event) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(event));
}

function sendSamples(float32) {
  send({type: "input_audio_buffer.append", audio: toBase64(toPcm16(float32))});
  run.sent += float32.length;
  if (run.mode === "mic") {
    run.marks.push([run.sent / run.rate, performance.now()]);
    while (run.marks.length > 3000) run.marks.shift(); // 5 minutes of 100 ms blocks
  }
}

// When did the page have the audio up to stream time t (s)? For the latency column.
function sentAt(t) {
  for (const [seconds, ms] of run.marks) if (seconds >= t) return ms;
  return null;
}

function addRow(item, start, end) {
  const row = $("segments").tBodies[0].insertRow();
  row.className = "pending";
  row.dataset.item = item;
  row.dataset.start = start;
  row.dataset.end = end;
  row.dataset.done = "0";
  const cells = ["n", "time", "time", "text", "latency"].map((cls) => {
    const c = row.insertCell();
    c.className = cls;
    return c;
  });
  cells[0].textContent = segments.length + 1;
  cells[1].textContent = fmt(start);
  cells[2].textContent = fmt(end);
  cells[3].textContent = "…";
  const seg = {item, start, end, text: "", done: false, row};
  segments.push(seg);
  return seg;
}

function finishRow(seg, text, failed) {
  seg.text = text;
  seg.done = true;
  seg.row.className = failed ? "failed" : "";
  seg.row.dataset.done = "1";
  seg.row.cells[3].textContent = failed ? "(failed: " + failed + ")" : text;
  if (run && run.mode === "mic") {
    const t = sentAt(seg.end - run.pad); // the end of the speech, before the segment's padding
    if (t !== null) {
      const latency = (performance.now() - t) / 1000;
      seg.row.dataset.latency = latency.toFixed(3);
      seg.row.cells[4].textContent = latency.toFixed(2) + " s";
    }
  }
  $("srt").disabled = false;
  maybeDone();
}

function maybeDone() {
  if (run && run.committed && segments.every((s) => s.done)) {
    setStatus("done", "done: " + segments.length + " segments");
    const finished = ws;
    ws = null;
    if (finished) finished.close(1000);
    $("record").disabled = false;
    $("file").disabled = false;
  }
}

function onEvent(event) {
  const seg = () => segments.find((s) => s.item === event.item_id);
  switch (event.type) {
    case "transcription_session.created":
      send({
        type: "transcription_session.update",
        session: {
          input_audio_format: "pcm16",
          input_audio_rate: run.rate,
          task: $("task").value,
          input_audio_transcription: {language: $("src").value.trim()},
        },
      });
      break;
    case "transcription_session.updated":
      run.pad = event.session.turn_detection.prefix_padding_ms / 1000;
      run.ready();
      break;
    case "input_audio_buffer.committed":
      addRow(event.item_id, event.audio_start_ms / 1000, event.audio_end_ms / 1000);
      break;
    case "conversation.item.input_audio_transcription.completed": {
      const s = seg();
      if (s) finishRow(s, event.transcript, null);
      break;
    }
    case "conversation.item.input_audio_transcription.failed": {
      const s = seg();
      if (s) finishRow(s, "", event.error.message);
      break;
    }
    case "llast.commit.done":
      run.committed = true;
      maybeDone();
      break;
    case "error":
      showError(event.error.message);
      if (run && run.failedStart) run.failedStart(event.error.message);
      break;
  }
}

// Open the socket and set up the session; resolves once the server has taken the settings.
function connect(mode, rate) {
  segments = [];
  $("segments").tBodies[0].innerHTML = "";
  $("srt").disabled = true;
  showError("");
  run = {mode, rate, sent: 0, marks: [], pad: PAD_S, committed: false};
  const key = $("key").value.trim();
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const protocols = key ? ["realtime", "openai-insecure-api-key." + key] : ["realtime"];
  setStatus("connecting");
  return new Promise((resolve, reject) => {
    run.ready = resolve;
    run.failedStart = (message) => reject(new Error(message));
    ws = new WebSocket(scheme + "//" + location.host + "/v1/realtime?intent=transcription", protocols);
    ws.onmessage = (m) => onEvent(JSON.parse(m.data));
    ws.onclose = (e) => {
      if (ws !== null) { // closed by the server, not by us after "done"
        ws = null;
        if (e.code !== 1000) showError($("error").textContent || "connection closed (" + e.code + ")");
        setStatus("closed");
        $("record").disabled = false;
        $("stop").disabled = true;
        $("file").disabled = false;
        reject(new Error("connection closed"));
      }
    };
  }).then(() => { run.failedStart = null; });
}

let mic = null; // {stream, context}

async function startRecording() {
  $("record").disabled = true;
  $("file").disabled = true;
  try {
    const stream = await navigator.mediaDevices.getUserMedia(
      {audio: {channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
    const context = new AudioContext();
    await context.audioWorklet.addModule("/web/worklet.js");
    mic = {stream, context};
    await connect("mic", context.sampleRate);
    const node = new AudioWorkletNode(context, "pcm-capture");
    node.port.onmessage = (e) => sendSamples(e.data);
    const silent = context.createGain();
    silent.gain.value = 0;
    context.createMediaStreamSource(stream).connect(node).connect(silent).connect(context.destination);
    setStatus("recording");
    $("stop").disabled = false;
  } catch (e) {
    stopMic();
    showError($("error").textContent || "cannot record: " + e.message);
    setStatus("idle");
    $("record").disabled = false;
    $("file").disabled = false;
  }
}

function stopMic() {
  if (mic) {
    mic.stream.getTracks().forEach((t) => t.stop());
    mic.context.close();
    mic = null;
  }
}

function stopRecording() {
  $("stop").disabled = true;
  stopMic();
  setStatus("finishing");
  send({type: "input_audio_buffer.commit"});
}

async function translateFile(file) {
  $("record").disabled = true;
  $("file").disabled = true;
  try {
    const context = new AudioContext({sampleRate: 16000});
    const audio = await context.decodeAudioData(await file.arrayBuffer());
    context.close();
    const mono = new Float32Array(audio.length);
    for (let c = 0; c < audio.numberOfChannels; c++) {
      const ch = audio.getChannelData(c);
      for (let i = 0; i < ch.length; i++) mono[i] += ch[i] / audio.numberOfChannels;
    }
    await connect("file", 16000);
    setStatus("sending", "sending " + file.name);
    for (let i = 0; i < mono.length && ws; i += 16000) {
      while (ws && ws.bufferedAmount > 1 << 20) await new Promise((r) => setTimeout(r, 50));
      sendSamples(mono.subarray(i, i + 16000));
    }
    setStatus("finishing");
    send({type: "input_audio_buffer.commit"});
  } catch (e) {
    showError($("error").textContent || "cannot translate the file: " + e.message);
    setStatus("idle");
    $("record").disabled = false;
    $("file").disabled = false;
  }
}

function srtText() {
  const cues = segments.filter((s) => s.done && s.text.trim());
  return cues.map((s, i) => (i + 1) + "\n" + srtTime(s.start) + " --> " + srtTime(s.end) + "\n" +
    s.text.trim().split(/\s+/).join(" ") + "\n").join("\n");
}

function downloadSrt() {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([srtText()], {type: "application/x-subrip"}));
  a.download = "llast-live.srt";
  a.click();
  URL.revokeObjectURL(a.href);
}

$("record").addEventListener("click", startRecording);
$("stop").addEventListener("click", stopRecording);
$("file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  e.target.value = ""; // the same file again is a new change
  if (file) translateFile(file);
});
$("srt").addEventListener("click", downloadSrt);
