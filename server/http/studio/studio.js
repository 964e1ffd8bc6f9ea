// The studio page: create, listen, keep a history, lay clips on a timeline and mix them.
// Everything goes through the public API (api.js), with the same key and rules as any client.
import * as api from "./api.js";
import { Recorder, decode, drawWaveform, playStream } from "./audio.js";
import { Finetunes } from "./finetune.js";
import { DRAG_TYPE, Timeline } from "./timeline.js";

const $ = (id) => document.getElementById(id);
const AUDIO_KINDS = new Set(["music", "sound", "melody", "continuation", "mix"]);
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const ENDPOINT = {
  music: "/api/generate/music",
  sound: "/api/generate/sound",
  melody: "/api/generate/melody",
  continuation: "/api/generate/continuation",
};
const INPUT_FIELD = { melody: "melody", continuation: "audio" };
const HEALTH_EVERY_MS = 2000;
const REFRESH_EVERY_MS = 5000;

const state = {
  kind: "music",
  features: { stream: false, mix: false, keyRequired: false },
  models: [],
  jobs: [],
  running: null, // {job, abort}
  uploads: new Map(), // job id -> the input file it was made from (re-run needs it again)
  melody: null, // {blob, name}
  continueFile: null,
  recorder: null,
  player: { job: null, buffer: null },
  followed: new Set(), // download jobs whose events are followed
};

// -- messages ---------------------------------------------------------------------------------------

function banner(text) {
  $("banner-text").textContent = text;
  $("banner").hidden = !text;
}

function problem(error) {
  if (error?.name === "AbortError") return;
  if (error instanceof api.ApiError && error.status === 401) return; // the key dialog says it
  banner(error instanceof api.ApiError ? error.text : String(error?.message || error));
}

const formatBytes = (n) =>
  n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.round(n / 1e3)} kB`;
const seconds = (s) => (s >= 60 ? `${Math.floor(s / 60)}:${String(Math.round(s % 60)).padStart(2, "0")}` : `${s.toFixed(1)} s`);

// -- what this server offers (its OpenAPI document, open like /health) -------------------------------

async function readFeatures() {
  const doc = await (await fetch("/openapi.json")).json();
  const paths = Object.keys(doc.paths || {});
  const schemas = doc.components?.schemas || {};
  const music = schemas.MusicRequest?.properties || {};
  state.features = {
    mix: paths.includes("/api/mix"),
    finetune: paths.includes("/api/finetune"),
    stream: "stream" in music && paths.some((p) => /^\/api\/jobs\/\{[^}]+\}\/stream$/.test(p)),
    keyRequired: Object.values(doc.paths["/api/models"] || {}).some((op) => op.responses && "401" in op.responses),
    maxDuration: music.duration?.maximum || 300,
  };
  showFeatures();
}

function showFeatures() {
  const { stream, mix, finetune, maxDuration } = state.features;
  $("finetune").hidden = !finetune;
  $("stream").disabled = !stream;
  $("stream-note").textContent = stream ? "" : "(this server does not stream)";
  $("mix-notice").hidden = mix;
  $("mix-notice").textContent = mix ? "" : "Mixing is not available on this server: it has no POST /api/mix.";
  updateMixButton();
  const limit = Math.min(maxDuration, 300);
  $("duration").max = String(limit);
  $("duration-range").max = String(Math.min(limit, 60));
}

function noRoute(what, error) {
  // A server that answers 404 for a route the page uses: say so where it is used.
  if (what === "mix") {
    state.features.mix = false;
  } else {
    state.features.stream = false;
    $("stream").checked = false;
  }
  showFeatures();
  banner(`${error.message}: this server has no ${what === "mix" ? "mixing" : "streaming"}.`);
}

// -- the key ----------------------------------------------------------------------------------------

function askForKey(reason) {
  $("key-reason").textContent = reason;
  $("key-error").hidden = true;
  $("key-input").value = "";
  $("key-forget").hidden = !api.key();
  if (!$("key-dialog").open) $("key-dialog").showModal();
  $("key-input").focus();
}

api.onUnauthorized((error) => {
  askForKey(
    api.key() ? "The server refused this key. Enter the right one." : "This server needs an API key (AUDIOCRAFT_API_KEY)."
  );
  if (api.key()) {
    $("key-error").textContent = error.message;
    $("key-error").hidden = false;
  }
});

$("key-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  api.setKey($("key-input").value.trim());
  try {
    await api.getJson("/api/models");
  } catch {
    return; // onUnauthorized showed it
  }
  $("key-dialog").close();
  banner("");
  await refreshAll();
});
$("key-forget").addEventListener("click", () => {
  api.setKey("");
  askForKey("The key is forgotten. Enter one to go on.");
});
$("key-button").addEventListener("click", () => askForKey("The key this page sends as Authorization: Bearer."));

// -- server status ----------------------------------------------------------------------------------

async function refreshHealth() {
  try {
    const health = await (await fetch("/health")).json();
    $("health-pill").dataset.state = health.status;
    $("health-text").textContent = health.status === "ok" ? "online" : health.status;
    $("device-pill").textContent = health.device;
    const { queued, running, capacity } = health.queue;
    $("queue-pill").textContent = `${running} running · ${queued} queued`;
    $("queue-running").textContent = running;
    $("queue-queued").textContent = queued;
    $("queue-capacity").textContent = capacity;
    $("server-version").textContent = `v${health.version}`;
    renderLoaded(health.models);
  } catch {
    $("health-pill").dataset.state = "down";
    $("health-text").textContent = "offline";
  }
}

function renderLoaded(loaded) {
  const list = $("loaded-models");
  if (!loaded.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "None loaded yet: the first generation loads its model.";
    list.replaceChildren(li);
    return;
  }
  list.replaceChildren(
    ...loaded.map((m) => {
      const info = state.models.find((x) => x.name === m.name);
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.textContent = m.name;
      const where = document.createElement("span");
      where.textContent = [m.device, m.dtype, info?.memory_bytes ? formatBytes(info.memory_bytes) : null]
        .filter(Boolean)
        .join(" · ");
      li.append(name, where);
      return li;
    })
  );
}

// -- models -----------------------------------------------------------------------------------------

const CAPABILITY = { music: "music", sound: "sound", melody: "melody", continuation: "continuation" };

async function refreshModels() {
  state.models = (await api.getJson("/api/models")).models;
  renderModels();
  finetunes.renderBases();
  for (const m of state.models) if (m.download_job) followDownload(m.name, m.download_job);
}

function modelsForKind() {
  return state.models.filter((m) => m.capabilities.includes(CAPABILITY[state.kind]));
}

function renderModels() {
  const select = $("model");
  const chosen = select.value;
  const models = modelsForKind();
  const group = (label, list) => {
    const g = document.createElement("optgroup");
    g.label = label;
    for (const m of list) {
      const o = document.createElement("option");
      o.value = m.name;
      const alias = m.aliases.length ? ` (${m.aliases.slice(0, 2).join(", ")})` : "";
      o.textContent = `${m.name}${alias}`;
      g.append(o);
    }
    return g;
  };
  const installed = models.filter((m) => m.installed);
  const missing = models.filter((m) => !m.installed);
  select.replaceChildren(
    ...[installed.length && group("Installed", installed), missing.length && group("Not installed", missing)].filter(Boolean)
  );
  if (models.some((m) => m.name === chosen)) select.value = chosen;
  showModel();
}

function showModel() {
  const m = state.models.find((x) => x.name === $("model").value);
  if (!m) {
    $("model-note").textContent = state.models.length ? "No model of this kind in the catalogue." : "";
    $("download-model").hidden = true;
    return;
  }
  const shape = `${m.sample_rate / 1000} kHz ${m.channels === 1 ? "mono" : "stereo"} · ${m.licence}`;
  const status = m.loaded
    ? `loaded on ${m.device}`
    : m.installed
      ? `installed · ${formatBytes(m.size_on_disk_bytes)}`
      : "not installed: downloads on first use, or now";
  $("model-note").textContent = `${status} · ${shape}`;
  const downloading = Boolean(m.download_job);
  $("download-model").hidden = m.installed && !downloading;
  $("download-model").disabled = downloading;
  $("download-model").textContent = downloading ? "Downloading…" : "Download";
  $("download-progress").hidden = !downloading;
  $("download-text").hidden = !downloading;
}

function showDownload(job) {
  const d = job.download;
  const fraction = d && d.bytes_total ? d.bytes_done / d.bytes_total : job.progress || 0;
  $("download-progress").hidden = false;
  $("download-text").hidden = false;
  $("download-progress").querySelector(".bar").style.width = `${Math.round(fraction * 100)}%`;
  $("download-text").textContent = d
    ? `${formatBytes(d.bytes_done)}${d.bytes_total ? ` of ${formatBytes(d.bytes_total)}` : ""}${d.file ? ` · ${d.file}` : ""}`
    : job.state;
}

async function followDownload(name, jobId) {
  if (state.followed.has(jobId)) return;
  state.followed.add(jobId);
  try {
    const job = await api.follow(jobId, (j) => {
      if ($("model").value === name) showDownload(j);
    });
    if (job.state !== "succeeded") banner(`The download of ${name} ${job.state}: ${job.error?.message || ""}`);
  } catch (error) {
    problem(error);
  } finally {
    state.followed.delete(jobId);
    await refreshModels().catch(problem);
    if ($("model").value === name) {
      const m = state.models.find((x) => x.name === name);
      $("download-text").hidden = !m?.installed;
      $("download-text").textContent = m?.installed ? `${name} is installed.` : "";
      $("download-progress").hidden = true;
    }
  }
}

$("model").addEventListener("change", showModel);
$("download-model").addEventListener("click", async () => {
  const name = $("model").value;
  $("download-model").disabled = true;
  try {
    const response = await api.request(`/api/models/${encodeURIComponent(name)}/download`, { method: "POST" });
    const body = api.parse(await response.text());
    if (response.status === 202) {
      showDownload(body.job);
      await refreshModels();
      followDownload(name, body.job.id);
    } else {
      await refreshModels();
    }
  } catch (error) {
    problem(error);
    $("download-model").disabled = false;
  }
});

// -- the form ---------------------------------------------------------------------------------------

const PLACEHOLDER = {
  music: "Warm lo-fi hip hop with soft piano and vinyl crackle",
  sound: "Thunder rolling over heavy rain",
  melody: "Orchestral strings carrying the tune",
  continuation: "Keep going, add drums",
};

function setKind(kind) {
  state.kind = kind;
  for (const tab of $("kind-tabs").querySelectorAll("button")) tab.setAttribute("aria-selected", String(tab.dataset.kind === kind));
  $("melody-field").hidden = kind !== "melody";
  $("continue-field").hidden = kind !== "continuation";
  $("prompt-optional").hidden = !(kind in INPUT_FIELD);
  $("prompt").placeholder = PLACEHOLDER[kind];
  setDuration(Math.min(kind === "sound" ? 5 : 8, Number($("duration").max)));
  renderModels();
  renderContinueSources();
}

for (const tab of $("kind-tabs").querySelectorAll("button")) tab.addEventListener("click", () => setKind(tab.dataset.kind));

function setDuration(v) {
  $("duration").value = String(v);
  $("duration-range").value = String(v);
  $("duration-out").textContent = `${v} s`;
}
$("duration-range").addEventListener("input", () => setDuration(Number($("duration-range").value)));
$("duration").addEventListener("input", () => {
  $("duration-range").value = $("duration").value;
  $("duration-out").textContent = `${$("duration").value} s`;
});
$("seed-clear").addEventListener("click", () => ($("seed").value = ""));

// The request as the form says it (the JSON fields of the generation schemas).
function formRequest() {
  const num = (id) => Number($(id).value);
  const body = {
    model: $("model").value || undefined,
    duration: num("duration"),
    top_k: num("top_k"),
    top_p: num("top_p"),
    temperature: num("temperature"),
    cfg_coef: num("cfg_coef"),
    format: "wav",
    async: true,
  };
  const prompt = $("prompt").value.trim();
  if (prompt) body.prompt = prompt;
  const seed = $("seed").value.trim();
  if (seed !== "") body.seed = seed; // a string: exact to 2^63 - 1 (api.stringify sends it as a number)
  if (state.kind === "continuation") body.include_prompt = $("include-prompt").checked;
  // MAGNeT models (magnet-*, audio-magnet-*) anneal their own temperature and guidance: the form's
  // MusicGen sampling fields are left to the server's MAGNeT defaults (it refuses cfg_coef).
  if (/magnet/.test(body.model || "")) for (const k of ["top_k", "top_p", "temperature", "cfg_coef"]) delete body[k];
  return body;
}

// melody and continuation: a file goes as multipart (its fields as strings), a job as JSON.
function withInput(kind, body) {
  if (kind === "melody") {
    if (!state.melody) throw new Error("Upload or record a melody first.");
    return { file: state.melody };
  }
  if (kind === "continuation") {
    if (state.continueFile) return { file: state.continueFile };
    const id = $("continue-job").value;
    if (!id) throw new Error("Pick a clip to continue, or upload audio.");
    body.audio_job = id;
  }
  return {};
}

async function submit(kind, body, file) {
  const path = ENDPOINT[kind];
  if (!file) return (await api.postJson(path, body)).job;
  const form = new FormData();
  for (const [name, value] of Object.entries(body)) if (value !== undefined) form.append(name, String(value));
  form.append(INPUT_FIELD[kind], file.blob, file.name);
  return api.parse(await (await api.request(path, { method: "POST", form })).text()).job;
}

$("generate-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (state.running) return;
  const kind = state.kind;
  const body = formRequest();
  if (!body.prompt && !(kind in INPUT_FIELD)) {
    $("prompt").focus();
    banner("Write a prompt first: what should it sound like?");
    return;
  }
  try {
    const { file } = withInput(kind, body);
    await run(kind, body, file);
  } catch (error) {
    problem(error);
  }
});

// Submit, follow the job's events (and its stream, when asked), then play its audio.
async function run(kind, body, file) {
  banner("");
  const stream = state.features.stream && $("stream").checked;
  if (stream) body.stream = true;
  const abort = new AbortController();
  setRunning(true);
  showJob({ state: "queued", progress: 0 }, "job");
  let job;
  try {
    job = await submit(kind, body, file);
    if (file) state.uploads.set(job.id, file);
    state.running = { job, abort };
    showJob(job, "job");
    refreshHistory().catch(problem);
    let streaming = null;
    let streamed = false; // the stream played in <audio>: the finished audio only draws the waveform
    if (stream) {
      setPlayer(job);
      streaming = playStream($("audio"), job.id, abort.signal)
        .then(() => (streamed = true))
        .catch((error) => {
          if (error instanceof api.ApiError && error.status === 404) noRoute("stream", error);
          else problem(error);
        });
    }
    job = await api.follow(job.id, (j) => showJob(j, "job"), abort.signal);
    await streaming;
    if (job.state === "succeeded") await play(job, { keepSource: streamed });
    else if (job.state === "failed") banner(`The job failed: ${job.error?.message || "no reason given"}${job.error?.hint ? `. ${job.error.hint}` : ""}`);
  } finally {
    state.running = null;
    setRunning(false);
    refreshHistory().catch(problem);
  }
}

function setRunning(running) {
  $("generate").disabled = running;
  $("generate").textContent = running ? "Generating…" : "Generate";
  $("cancel").hidden = !running;
  $("cancel").disabled = false;
}

$("cancel").addEventListener("click", async () => {
  const running = state.running;
  if (!running) return;
  $("cancel").disabled = true;
  try {
    showJob(await api.getJson(`/api/jobs/${running.job.id}`, { method: "DELETE" }), "job");
  } catch (error) {
    problem(error);
  }
});

const STATE_TEXT = { queued: "Queued", running: "Generating", succeeded: "Done", failed: "Failed", cancelled: "Cancelled" };

// The progress of a job in the create panel ("job") or the timeline ("mix").
function showJob(job, where) {
  $(`${where}-status`).hidden = false;
  if (job.id && state.shown?.[where] !== `${job.id}:${job.state}`) {
    state.shown = { ...state.shown, [where]: `${job.id}:${job.state}` };
    refreshHealth(); // the queue's counts change with the job's state
  }
  const bar = $(`${where}-progress`);
  bar.dataset.state = job.state;
  const progress = job.state === "succeeded" ? 1 : job.progress || 0;
  bar.querySelector(".bar").style.width = `${Math.round(progress * 100)}%`;
  const waitingDownload = job.state === "queued" && job.download;
  let text = STATE_TEXT[job.state] || job.state;
  if (job.state === "running") text += ` ${Math.round(progress * 100)}%`;
  if (waitingDownload) text = "Downloading the model";
  $(`${where}-state`).textContent = text;
  const detail = [];
  if (job.state === "queued" && job.position != null) detail.push(job.position === 0 ? "next in line" : `${job.position} ahead`);
  if (waitingDownload) detail.push(formatBytes(job.download.bytes_done) + (job.download.bytes_total ? ` of ${formatBytes(job.download.bytes_total)}` : ""));
  if (job.state === "running" && job.eta_s != null) detail.push(`about ${seconds(job.eta_s)} left`);
  if (job.state === "succeeded" && job.result) detail.push(`${seconds(job.result.duration_s)} of audio`);
  if (job.state === "failed" && job.error) detail.push(job.error.message);
  $(`${where}-detail`).textContent = detail.join(" · ");
}

// -- melody and continuation inputs -----------------------------------------------------------------

$("melody-file").addEventListener("change", () => {
  const file = $("melody-file").files[0];
  if (file) setMelody({ blob: file, name: file.name }, `${file.name} · ${formatBytes(file.size)}`);
});

function setMelody(melody, note) {
  state.melody = melody;
  $("melody-note").textContent = note;
  $("melody-preview").hidden = false;
  $("melody-preview").src = URL.createObjectURL(melody.blob);
}

$("record").addEventListener("click", async () => {
  const button = $("record");
  try {
    if (!state.recorder) {
      state.recorder = new Recorder();
      await state.recorder.start();
      button.textContent = "■ Stop";
      button.classList.add("danger");
      const started = performance.now();
      const tick = () => {
        const s = (performance.now() - started) / 1000;
        $("melody-note").textContent = `Recording ${seconds(s)}… hum or play the melody, then stop.`;
      };
      tick();
      state.recordTimer = setInterval(tick, 250);
      return;
    }
    const recorder = state.recorder;
    state.recorder = null;
    clearInterval(state.recordTimer);
    button.textContent = "● Record";
    button.classList.remove("danger");
    const { blob, duration_s } = await recorder.stop();
    setMelody({ blob, name: "recording.wav" }, `Recorded ${seconds(duration_s)} from the microphone`);
  } catch (error) {
    state.recorder = null;
    clearInterval(state.recordTimer);
    button.textContent = "● Record";
    button.classList.remove("danger");
    banner(`Recording needs the microphone: ${error.message}`);
  }
});

$("continue-file").addEventListener("change", () => {
  const file = $("continue-file").files[0];
  state.continueFile = file ? { blob: file, name: file.name } : null;
  $("continue-job").disabled = Boolean(file);
  $("continue-note").textContent = file ? `${file.name} · ${formatBytes(file.size)}` : "";
});

function renderContinueSources(selected = $("continue-job").value) {
  const select = $("continue-job");
  const done = state.jobs.filter((j) => j.state === "succeeded" && j.result);
  const options = done.map((j) => {
    const o = document.createElement("option");
    o.value = j.id;
    o.textContent = `${titleOf(j)} · ${seconds(j.result.duration_s)}`;
    return o;
  });
  if (!options.length) {
    const o = document.createElement("option");
    o.value = "";
    o.textContent = "No finished clips yet";
    options.push(o);
  }
  select.replaceChildren(...options);
  if (done.some((j) => j.id === selected)) select.value = selected;
}

// -- the player -------------------------------------------------------------------------------------

function titleOf(job) {
  if (job.kind === "mix") return `Mix of ${job.request?.tracks?.length || "?"} tracks`;
  return job.request?.prompt || `${job.kind} of ${job.request?.melody_job || job.request?.audio_job || "an upload"}`;
}

function setPlayer(job) {
  state.player.job = job;
  $("player-prompt").textContent = titleOf(job);
  const facts = [job.kind, job.model, job.seed != null ? `seed ${job.seed}` : null, job.result ? seconds(job.result.duration_s) : null];
  $("player-meta").textContent = facts.filter(Boolean).join(" · ");
  $("player-downloads").hidden = !job.result;
  $("player-seed").hidden = job.seed == null || job.kind === "mix";
  for (const li of $("history-list").children) li.classList.toggle("current", li.dataset.job === job.id);
}

// The job's audio as made: into <audio> (unless a stream already plays there) and onto the waveform.
async function play(job, { keepSource = false, autoplay = false } = {}) {
  setPlayer(job);
  const data = await api.blob(`/api/jobs/${job.id}/audio`);
  const audio = $("audio");
  if (!keepSource) {
    if (audio.src.startsWith("blob:")) URL.revokeObjectURL(audio.src);
    audio.src = URL.createObjectURL(data);
    if (autoplay) audio.play().catch(() => {});
  }
  state.player.buffer = await decode(await data.arrayBuffer());
  $("wave-cursor").hidden = false;
  drawWaveform($("waveform"), state.player.buffer, 0);
}

function drawProgress() {
  const audio = $("audio");
  const fraction = audio.duration && Number.isFinite(audio.duration) ? audio.currentTime / audio.duration : 0;
  $("wave-cursor").style.left = `${fraction * 100}%`;
  if (state.player.buffer) drawWaveform($("waveform"), state.player.buffer, fraction);
}
$("audio").addEventListener("timeupdate", drawProgress);
$("audio").addEventListener("seeked", drawProgress);
$("waveform").addEventListener("click", (e) => {
  const audio = $("audio");
  if (!audio.duration || !Number.isFinite(audio.duration)) return;
  const box = $("waveform").getBoundingClientRect();
  audio.currentTime = ((e.clientX - box.left) / box.width) * audio.duration;
});
new ResizeObserver(() => drawWaveform($("waveform"), state.player.buffer, 0)).observe($("waveform"));

for (const chip of $("player-downloads").querySelectorAll("[data-format]")) {
  chip.addEventListener("click", () => downloadAudio(state.player.job, chip.dataset.format));
}
$("player-seed").addEventListener("click", () => {
  if (state.player.job?.seed != null) $("seed").value = String(state.player.job.seed);
});

function downloadAudio(job, format) {
  api.download(`/api/jobs/${job.id}/audio?format=${format}`, `${job.id}.${format}`).catch(problem);
}

// -- history ----------------------------------------------------------------------------------------

async function refreshHistory() {
  const { jobs, total } = await api.getJson("/api/jobs?limit=100");
  const clips = jobs.filter((j) => AUDIO_KINDS.has(j.kind));
  // Redraw only what changed: an open menu or a drag in progress survives a refresh.
  const signature = JSON.stringify(clips.map((j) => [j.id, j.state, j.progress]));
  if (signature === state.historySignature) return;
  state.historySignature = signature;
  state.jobs = clips;
  $("history-count").textContent = state.jobs.length ? `${state.jobs.length} clip${state.jobs.length === 1 ? "" : "s"}` : "";
  const list = $("history-list");
  if (!state.jobs.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = total ? "No clips yet (only other jobs so far)." : "No clips yet: generate something.";
    list.replaceChildren(li);
  } else {
    list.replaceChildren(...state.jobs.map(historyItem));
  }
  renderContinueSources();
}

function historyItem(job) {
  const li = $("history-item").content.firstElementChild.cloneNode(true);
  li.dataset.job = job.id;
  li.dataset.state = job.state;
  li.classList.toggle("current", state.player.job?.id === job.id);
  const tag = li.querySelector(".tag");
  tag.textContent = job.kind;
  tag.dataset.kind = job.kind;
  li.querySelector(".clip-title").textContent = titleOf(job);
  li.querySelector(".clip-title").title = titleOf(job);
  const meta = li.querySelector(".clip-meta");
  const facts = [job.model, job.seed != null && job.kind !== "mix" ? `seed ${job.seed}` : null];
  if (job.result) facts.push(seconds(job.result.duration_s));
  meta.textContent = facts.filter(Boolean).join(" · ");
  if (job.state !== "succeeded") {
    const s = document.createElement("span");
    s.className = `state-${job.state}`;
    s.textContent = ` · ${job.state}${job.state === "running" ? ` ${Math.round(job.progress * 100)}%` : ""}`;
    meta.append(s);
  }
  const playable = job.state === "succeeded" && Boolean(job.result);
  for (const b of li.querySelectorAll('[data-action="play"], [data-action="continue"], [data-action="timeline"]')) b.disabled = !playable;
  li.querySelector("details.menu").hidden = !playable;
  const rerunButton = li.querySelector('[data-action="rerun"]');
  rerunButton.hidden = job.kind === "mix";
  const needsUpload = job.kind in INPUT_FIELD && !job.request?.[`${INPUT_FIELD[job.kind]}_job`] && !job.request?.[`${INPUT_FIELD[job.kind]}_content`];
  if (needsUpload && !state.uploads.has(job.id)) {
    rerunButton.disabled = true;
    rerunButton.title = "Its input was an upload from another session: upload it again to re-run";
  }
  li.draggable = playable;
  li.addEventListener("dragstart", (e) => {
    e.dataTransfer.setData(DRAG_TYPE, JSON.stringify(job));
    e.dataTransfer.effectAllowed = "copy";
  });
  li.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    if (action === "play") play(job, { autoplay: true }).catch(problem);
    if (action === "download") {
      button.closest("details").open = false;
      downloadAudio(job, button.dataset.format);
    }
    if (action === "rerun") rerun(job).catch(problem);
    if (action === "continue") {
      setKind("continuation");
      renderContinueSources(job.id);
      $("continue-file").value = "";
      state.continueFile = null;
      $("continue-job").disabled = false;
      $("prompt").focus();
    }
    if (action === "timeline") timeline.add(job);
  });
  return li;
}

// The same request again, with the same seed: the same audio.
async function rerun(job) {
  if (state.running) {
    banner("Wait for the running job to finish (or cancel it) first.");
    return;
  }
  const { stream: _stream, ...request } = job.request;
  const body = { ...request, seed: job.seed, async: true };
  await run(job.kind, body, state.uploads.get(job.id));
}

$("history-refresh").addEventListener("click", () => refreshHistory().catch(problem));

// -- the timeline and the mix -----------------------------------------------------------------------

const timeline = new Timeline({
  tracks: $("tracks"),
  ruler: $("ruler"),
  inspector: {
    root: $("inspector"),
    name: $("inspector-name"),
    offset: $("clip-offset"),
    gain: $("clip-gain"),
    fadeIn: $("clip-fade-in"),
    fadeOut: $("clip-fade-out"),
    remove: $("clip-remove"),
  },
  onChange: updateMixButton,
});
$("add-track").addEventListener("click", () => timeline.addTrack());

function updateMixButton() {
  const count = timeline.clips.length;
  $("mix").disabled = !state.features.mix || count === 0 || state.mixing;
  $("mix").textContent = count ? `Mix ${count} clip${count === 1 ? "" : "s"}` : "Mix";
}

$("mix").addEventListener("click", async () => {
  state.mixing = true;
  updateMixButton();
  banner("");
  showJob({ state: "queued", progress: 0 }, "mix");
  try {
    const accepted = await api.postJson("/api/mix", { tracks: timeline.mixTracks(), format: "wav", async: true });
    const job = await api.follow(accepted.job.id, (j) => showJob(j, "mix"));
    if (job.state === "succeeded") await play(job);
    else if (job.state === "failed") banner(`The mix failed: ${job.error?.message}${job.error?.hint ? `. ${job.error.hint}` : ""}`);
  } catch (error) {
    if (error instanceof api.ApiError && error.status === 404 && error.code === "not_found") noRoute("mix", error);
    else problem(error);
    $("mix-status").hidden = true;
  } finally {
    state.mixing = false;
    updateMixButton();
    refreshHistory().catch(problem);
  }
});

// -- fine-tuning (finetune.js) ----------------------------------------------------------------------

// A fine-tuned model in the Create form: on a tab it generates for (the current one if it can).
function useModel(name) {
  const m = state.models.find((x) => x.name === name);
  if (!m) return;
  if (!m.capabilities.includes(CAPABILITY[state.kind])) {
    setKind(Object.keys(CAPABILITY).find((kind) => m.capabilities.includes(CAPABILITY[kind])));
  }
  $("model").value = name;
  showModel();
  $("create").scrollIntoView({ block: "start" });
}

const finetunes = new Finetunes({ models: () => state.models, modelsChanged: refreshModels, useModel, problem });

// -- start ------------------------------------------------------------------------------------------

$("banner-close").addEventListener("click", () => banner(""));

async function refreshAll() {
  await Promise.all([refreshModels(), refreshHistory()]);
  if (state.features.finetune) await finetunes.refresh();
  await refreshHealth();
}

async function start() {
  setKind("music");
  await refreshHealth();
  try {
    await readFeatures();
  } catch (error) {
    banner(`Could not read the server's API document (/openapi.json): ${error.message}`);
  }
  if (state.features.keyRequired && !api.key()) {
    askForKey("This server needs an API key (AUDIOCRAFT_API_KEY). It stays in this tab only.");
  } else {
    await refreshAll().catch(problem);
  }
  setInterval(refreshHealth, HEALTH_EVERY_MS);
  setInterval(() => {
    if ($("key-dialog").open || document.hidden) return;
    refreshModels().catch(problem);
    refreshHistory().catch(problem);
    if (state.features.finetune) finetunes.refresh().catch(problem);
  }, REFRESH_EVERY_MS);
  document.body.dataset.ready = "true";
}

start();
