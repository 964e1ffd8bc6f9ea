// Audio in the page: decoding (WebAudio), the waveform, recording a melody, and playing a stream.
import { request } from "./api.js";

// An OfflineAudioContext decodes without the autoplay policy's user gesture.
export async function decode(arrayBuffer) {
  const context = new OfflineAudioContext(1, 1, 44100);
  return context.decodeAudioData(arrayBuffer);
}

// Peaks of every channel, drawn as mirrored bars; `progress` (0..1) tints what has played.
export function drawWaveform(canvas, buffer, progress = 0) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.floor(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.floor(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, width, height);
  if (!buffer) {
    delete canvas.dataset.drawn;
    return;
  }
  const bar = Math.max(2, Math.round(3 * ratio));
  const bars = Math.floor(width / bar);
  const peaks = peaksOf(buffer, bars);
  const loudest = Math.max(1e-6, ...peaks);
  const mid = height / 2;
  for (let i = 0; i < bars; i++) {
    const h = Math.max(1, (peaks[i] / loudest) * (height * 0.46));
    g.fillStyle = i / bars < progress ? "#a48bff" : "#4b4f6b";
    g.fillRect(i * bar, mid - h, bar - Math.max(1, ratio), h * 2);
  }
  canvas.dataset.drawn = String(bars);
}

function peaksOf(buffer, count) {
  const peaks = new Float32Array(count);
  const step = buffer.length / count;
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const data = buffer.getChannelData(c);
    for (let i = 0; i < count; i++) {
      let peak = 0;
      const end = Math.min(data.length, Math.floor((i + 1) * step));
      for (let j = Math.floor(i * step); j < end; j++) {
        const v = Math.abs(data[j]);
        if (v > peak) peak = v;
      }
      peaks[i] = Math.max(peaks[i], peak);
    }
  }
  return peaks;
}

// 16-bit PCM WAV of a decoded buffer: what the server takes from any browser's recording
// (MediaRecorder's WebM/Opus is not one of its input formats).
export function wavOf(buffer) {
  const channels = buffer.numberOfChannels;
  const frames = buffer.length;
  const bytes = 44 + frames * channels * 2;
  const view = new DataView(new ArrayBuffer(bytes));
  const text = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, bytes - 8, true);
  text(8, "WAVEfmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true);
  view.setUint16(22, channels, true);
  view.setUint32(24, buffer.sampleRate, true);
  view.setUint32(28, buffer.sampleRate * channels * 2, true);
  view.setUint16(32, channels * 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, frames * channels * 2, true);
  const data = [...Array(channels).keys()].map((c) => buffer.getChannelData(c));
  let at = 44;
  for (let i = 0; i < frames; i++) {
    for (let c = 0; c < channels; c++) {
      const v = Math.max(-1, Math.min(1, data[c][i]));
      view.setInt16(at, v < 0 ? v * 0x8000 : v * 0x7fff, true);
      at += 2;
    }
  }
  return new Blob([view], { type: "audio/wav" });
}

// The microphone to a WAV file: start() then stop() resolves with {blob, duration_s}.
export class Recorder {
  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    this.chunks = [];
    this.recorder = new MediaRecorder(this.stream);
    this.recorder.addEventListener("dataavailable", (e) => e.data.size && this.chunks.push(e.data));
    this.done = new Promise((resolve) => this.recorder.addEventListener("stop", resolve, { once: true }));
    this.recorder.start();
  }

  async stop() {
    this.recorder.stop();
    await this.done;
    this.stream.getTracks().forEach((t) => t.stop());
    const recorded = new Blob(this.chunks, { type: this.recorder.mimeType });
    const buffer = await decode(await recorded.arrayBuffer());
    return { blob: wavOf(buffer), duration_s: buffer.duration };
  }
}

const STREAM_TYPE = "audio/mpeg";

// Play GET /api/jobs/{id}/stream?format=mp3 in `audio` as it arrives: MediaSource where the browser
// can append MP3 (it sends the key's header through fetch), else the whole answer as a Blob once
// it is in. Resolves when the stream has ended; a 404 (a server without streaming) throws its ApiError.
export async function playStream(audio, jobId, signal) {
  const path = `/api/jobs/${jobId}/stream?format=mp3`;
  const response = await request(path, { signal });
  if (!window.MediaSource || !MediaSource.isTypeSupported(STREAM_TYPE)) {
    audio.src = URL.createObjectURL(await response.blob());
    audio.play().catch(() => {});
    return;
  }
  const source = new MediaSource();
  audio.src = URL.createObjectURL(source);
  await new Promise((resolve) => source.addEventListener("sourceopen", resolve, { once: true }));
  const buffer = source.addSourceBuffer(STREAM_TYPE);
  const appended = () => new Promise((resolve) => buffer.addEventListener("updateend", resolve, { once: true }));
  const reader = response.body.getReader();
  let started = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer.appendBuffer(value);
    await appended();
    if (!started) {
      started = true;
      audio.play().catch(() => {}); // the autoplay policy may want a click on play: the controls are there
    }
  }
  if (source.readyState === "open") source.endOfStream();
}
