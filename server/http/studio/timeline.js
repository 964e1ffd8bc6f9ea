// The multi-track timeline: clips (finished jobs) on tracks, each with an offset, a gain and fades,
// mixed by POST /api/mix (one API track per clip).

export const DRAG_TYPE = "application/x-audiocraft-job";
const MIN_SPAN_S = 20; // the lanes show at least this many seconds
const round = (v, step = 0.1) => Math.round(v / step) * step;
let nextId = 1;

export class Timeline {
  constructor({ tracks, ruler, inspector, onChange }) {
    this.tracksEl = tracks;
    this.rulerEl = ruler;
    this.inspector = inspector; // {root, name, offset, gain, fadeIn, fadeOut, remove}
    this.onChange = onChange;
    this.tracks = [[], []];
    this.selected = null;
    this.bindInspector();
    new ResizeObserver(() => this.render()).observe(this.tracksEl);
    this.render();
  }

  get clips() {
    return this.tracks.flat();
  }

  addTrack() {
    this.tracks.push([]);
    this.render();
  }

  // `job` is a finished job with audio; `track` an index (or the first empty track).
  add(job, track = null, offset_s = 0) {
    const index = track ?? Math.max(0, this.tracks.findIndex((t) => t.length === 0));
    if (index >= this.tracks.length) this.tracks.push([]);
    const clip = {
      id: nextId++,
      job: job.id,
      kind: job.kind,
      label: job.request?.prompt || `${job.kind} ${job.id.slice(0, 8)}`,
      duration_s: job.result?.duration_s || 1,
      offset_s: Math.max(0, round(offset_s)),
      gain_db: 0,
      fade_in_s: 0,
      fade_out_s: 0,
    };
    this.tracks[index].push(clip);
    this.select(clip);
    this.changed();
    return clip;
  }

  // The body's tracks for POST /api/mix.
  mixTracks() {
    return this.clips.map((c) => ({
      job: c.job,
      offset_s: c.offset_s,
      gain_db: c.gain_db,
      fade_in_s: c.fade_in_s,
      fade_out_s: c.fade_out_s,
    }));
  }

  span() {
    return Math.max(MIN_SPAN_S, ...this.clips.map((c) => c.offset_s + c.duration_s + 2));
  }

  pixelsPerSecond() {
    const lane = this.tracksEl.querySelector(".lane");
    return (lane ? lane.clientWidth : 600) / this.span();
  }

  select(clip) {
    this.selected = clip;
    const ins = this.inspector;
    ins.root.hidden = !clip;
    if (clip) {
      ins.name.textContent = clip.label;
      ins.name.title = clip.label;
      ins.offset.value = clip.offset_s;
      ins.gain.value = clip.gain_db;
      ins.fadeIn.value = clip.fade_in_s;
      ins.fadeOut.value = clip.fade_out_s;
    }
    this.render();
  }

  remove(clip) {
    this.tracks = this.tracks.map((t) => t.filter((c) => c !== clip));
    this.select(null);
    this.changed();
  }

  changed() {
    this.render();
    this.onChange(this.clips);
  }

  bindInspector() {
    const ins = this.inspector;
    const bind = (input, field, min = 0) =>
      input.addEventListener("input", () => {
        const v = Number(input.value);
        if (!this.selected || !Number.isFinite(v)) return;
        this.selected[field] = min === null ? v : Math.max(min, v);
        this.changed();
      });
    bind(ins.offset, "offset_s");
    bind(ins.gain, "gain_db", null);
    bind(ins.fadeIn, "fade_in_s");
    bind(ins.fadeOut, "fade_out_s");
    ins.remove.addEventListener("click", () => this.selected && this.remove(this.selected));
  }

  render() {
    const span = this.span();
    this.tracksEl.replaceChildren(...this.tracks.map((clips, i) => this.trackEl(clips, i)));
    const pps = this.pixelsPerSecond();
    this.tracksEl.style.setProperty("--pps", `${pps}px`);
    const step = span > 60 ? 10 : span > 30 ? 5 : 2;
    const marks = [];
    for (let t = 0; t <= span; t += step) {
      const mark = document.createElement("span");
      mark.textContent = `${t}s`;
      mark.style.left = `${t * pps}px`;
      marks.push(mark);
    }
    this.rulerEl.replaceChildren(...marks);
    for (const el of this.tracksEl.querySelectorAll(".clip")) {
      const clip = this.clips.find((c) => c.id === Number(el.dataset.clip));
      el.style.left = `${clip.offset_s * pps}px`;
      el.style.width = `${Math.max(8, clip.duration_s * pps)}px`;
      el.querySelector(".fade-in").style.width = `${Math.min(clip.fade_in_s, clip.duration_s) * pps}px`;
      el.querySelector(".fade-out").style.width = `${Math.min(clip.fade_out_s, clip.duration_s) * pps}px`;
    }
  }

  trackEl(clips, index) {
    const row = document.createElement("div");
    row.className = "track";
    const name = document.createElement("span");
    name.className = "track-name";
    name.textContent = `Track ${index + 1}`;
    const lane = document.createElement("div");
    lane.className = "lane";
    lane.dataset.track = String(index);
    if (!clips.length) {
      const hint = document.createElement("span");
      hint.className = "hint";
      hint.textContent = "Drop a clip here";
      lane.append(hint);
    }
    lane.addEventListener("dragover", (e) => {
      if (!e.dataTransfer.types.includes(DRAG_TYPE)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
      lane.classList.add("over");
    });
    lane.addEventListener("dragleave", () => lane.classList.remove("over"));
    lane.addEventListener("drop", (e) => {
      e.preventDefault();
      lane.classList.remove("over");
      const job = JSON.parse(e.dataTransfer.getData(DRAG_TYPE) || "null");
      if (!job) return;
      const offset = (e.clientX - lane.getBoundingClientRect().left) / this.pixelsPerSecond();
      this.add(job, index, offset);
    });
    for (const clip of clips) lane.append(this.clipEl(clip));
    row.append(name, lane);
    return row;
  }

  clipEl(clip) {
    const el = document.createElement("div");
    el.className = `clip${clip === this.selected ? " selected" : ""}`;
    el.dataset.clip = String(clip.id);
    el.dataset.kind = clip.kind;
    el.title = `${clip.label} — drag to move`;
    const fadeIn = document.createElement("span");
    fadeIn.className = "fade-in";
    const fadeOut = document.createElement("span");
    fadeOut.className = "fade-out";
    const label = document.createElement("span");
    label.className = "clip-label";
    label.textContent = clip.label;
    const gain = document.createElement("span");
    gain.className = "clip-gain";
    gain.textContent = clip.gain_db ? `${clip.gain_db > 0 ? "+" : ""}${clip.gain_db} dB` : "";
    el.append(fadeIn, fadeOut, label, gain);
    // Drag sideways to move the clip in time.
    el.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      const startX = e.clientX;
      const start = clip.offset_s;
      const pps = this.pixelsPerSecond();
      el.setPointerCapture(e.pointerId);
      const move = (m) => {
        clip.offset_s = Math.max(0, round(start + (m.clientX - startX) / pps));
        el.style.left = `${clip.offset_s * pps}px`;
        this.inspector.offset.value = clip.offset_s;
      };
      const up = () => {
        el.removeEventListener("pointermove", move);
        this.select(clip);
        this.onChange(this.clips);
      };
      el.addEventListener("pointermove", move);
      el.addEventListener("pointerup", up, { once: true });
      this.selected = clip;
    });
    return el;
  }
}
