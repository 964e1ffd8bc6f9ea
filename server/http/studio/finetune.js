// The studio's fine-tune panel: start a LoRA run on an existing dataset (POST /api/finetune), follow
// each run's step and loss live through its job's server-sent events, cancel it, and offer the model
// it makes in the Create form once it is done. Datasets are made through the API or the CLI.
import * as api from "./api.js";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
// What a fine-tune starts from (lib/finetune.py TRAINABLE_KINDS): catalogue models, not adapters.
const TRAINABLE = new Set(["musicgen", "musicgen-melody", "audiogen"]);
const STATE_TEXT = { queued: "Queued", running: "Training", succeeded: "Done", failed: "Failed", cancelled: "Cancelled" };

// A dataset's codes are its codec's: a base trains only on a dataset of its own codec, and a melody
// base needs the windows' chroma (server/serving/finetune.py check_dataset_fits says the same).
function fits(dataset, model) {
  const codec = dataset.codec;
  return (
    codec.sample_rate === model.sample_rate &&
    codec.channels === model.channels &&
    (model.kind !== "musicgen-melody" || dataset.chroma)
  );
}

export class Finetunes {
  // models: () => the catalogue as the page last read it; modelsChanged: read it again;
  // useModel(name): pick the model in the Create form; problem(error): show an error.
  constructor({ models, modelsChanged, useModel, problem }) {
    this.models = models;
    this.modelsChanged = modelsChanged;
    this.useModel = useModel;
    this.problem = problem;
    this.datasets = [];
    this.items = new Map(); // job id -> its <li>
    this.views = new Map(); // job id -> its last view
    this.followed = new Set();
    $("ft-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.start().catch(problem);
    });
    $("ft-dataset").addEventListener("change", () => this.renderBases());
    $("ft-refresh").addEventListener("click", () => this.refresh().catch(problem));
  }

  async refresh() {
    const [datasets, jobs] = await Promise.all([api.getJson("/api/datasets"), api.getJson("/api/finetune")]);
    this.datasets = datasets.datasets;
    this.renderDatasets();
    for (const job of jobs.jobs) {
      this.show(job);
      if (!FINAL.has(job.state)) this.follow(job.id);
    }
  }

  renderDatasets() {
    const select = $("ft-dataset");
    const chosen = select.value;
    select.replaceChildren(
      ...this.datasets.map((d) => {
        const o = document.createElement("option");
        o.value = d.name;
        o.textContent = `${d.name} · ${d.windows} window${d.windows === 1 ? "" : "s"}`;
        return o;
      })
    );
    if (this.datasets.some((d) => d.name === chosen)) select.value = chosen;
    this.renderBases();
  }

  dataset() {
    return this.datasets.find((d) => d.name === $("ft-dataset").value) || null;
  }

  renderBases() {
    const select = $("ft-base");
    const chosen = select.value;
    const dataset = this.dataset();
    const bases = this.models().filter((m) => m.installed && !m.base && TRAINABLE.has(m.kind) && (!dataset || fits(dataset, m)));
    select.replaceChildren(
      ...bases.map((m) => {
        const o = document.createElement("option");
        o.value = o.textContent = m.name;
        return o;
      })
    );
    if (bases.some((m) => m.name === chosen)) select.value = chosen;
    else if (dataset && bases.some((m) => m.name === dataset.model)) select.value = dataset.model;
    const note = $("ft-dataset-note");
    if (!dataset) {
      note.textContent = "Make a dataset first: POST /api/datasets, or resource-audiocraft datasets add DIR.";
    } else {
      const rate = `${dataset.codec.sample_rate / 1000} kHz`;
      note.textContent =
        `${dataset.duration_s.toFixed(1)} s of audio, encoded with ${dataset.model}'s ${rate} codec` +
        (bases.length ? "" : ": no installed model reads it (build a dataset for the model you want)");
    }
    $("ft-start").disabled = !dataset || !bases.length;
  }

  async start() {
    const name = $("ft-name").value.trim();
    $("ft-name-note").textContent = name ? "" : "Name the new model (a-z, 0-9, '-', '_').";
    if (!name) return;
    const body = {
      base_model: $("ft-base").value,
      dataset: $("ft-dataset").value,
      name,
      steps: Number($("ft-steps").value),
      rank: Number($("ft-rank").value),
    };
    const accepted = await api.postJson("/api/finetune", body);
    this.show(accepted.job, { first: true });
    this.follow(accepted.job.id);
  }

  follow(id) {
    if (this.followed.has(id)) return;
    this.followed.add(id);
    api
      .follow(id, (job) => this.show(job))
      .then(async (job) => {
        if (job.state === "succeeded") await this.modelsChanged(); // the new model, in the Create form too
        this.show(job);
      })
      .catch(this.problem)
      .finally(() => this.followed.delete(id));
  }

  show(job, { first = false } = {}) {
    this.views.set(job.id, job);
    let li = this.items.get(job.id);
    if (!li) {
      li = $("ft-item").content.firstElementChild.cloneNode(true);
      li.dataset.job = job.id;
      li.querySelector("[data-action=cancel]").addEventListener("click", () => this.cancel(job.id).catch(this.problem));
      li.querySelector("[data-action=use]").addEventListener("click", () => this.useModel(this.views.get(job.id).request.name));
      this.items.set(job.id, li);
      const list = $("ft-list");
      list.querySelector(".empty")?.remove();
      if (first) list.prepend(li);
      else list.append(li);
    }
    const request = job.request || {};
    const training = job.training;
    const total = training?.total_steps || request.total_steps || request.steps || 0;
    const model = this.models().find((m) => m.name === request.name);
    li.dataset.state = job.state;
    li.querySelector(".ft-title").textContent = `${request.name} · ${request.dataset}`;
    li.querySelector(".ft-state").textContent = STATE_TEXT[job.state] || job.state;
    const step = training ? training.step : job.state === "succeeded" ? total : 0;
    li.querySelector(".ft-step").textContent = `step ${step} / ${total}`;
    const loss = training?.loss ?? (job.state === "succeeded" ? model?.finetune?.final_loss : null);
    li.querySelector(".ft-loss").textContent = loss == null ? "" : `loss ${Number(loss).toFixed(4)}`;
    li.querySelector(".ft-eta").textContent =
      job.state === "failed"
        ? job.error?.message || "failed"
        : job.eta_s != null && !FINAL.has(job.state)
          ? `about ${Math.ceil(job.eta_s)} s left`
          : "";
    const done = job.state === "succeeded" ? 1 : total ? step / total : job.progress || 0;
    li.querySelector(".bar").style.width = `${Math.round(done * 100)}%`;
    li.querySelector(".progress").dataset.state = job.state;
    li.querySelector("[data-action=cancel]").hidden = FINAL.has(job.state);
    li.querySelector("[data-action=use]").hidden = !(job.state === "succeeded" && model?.installed);
  }

  async cancel(id) {
    this.show(await api.parse(await (await api.request(`/api/finetune/${id}`, { method: "DELETE" })).text()));
  }
}
