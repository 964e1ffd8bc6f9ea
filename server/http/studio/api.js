// The service's API as the page uses it: the key (sessionStorage, sent as Authorization: Bearer),
// errors as the API gives them ({"error": {code, message, field, hint}}), and server-sent events read
// through fetch, since EventSource cannot send the key's header.

const KEY_NAME = "audiocraft.apiKey";

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `the server answered ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.field = error.field || null;
    this.hint = error.hint || null;
  }

  // What a person reads: the message, then what to do about it.
  get text() {
    return this.hint ? `${this.message}. ${this.hint}` : this.message;
  }
}

let unauthorized = () => {};

// Seeds go up to 2^63 - 1, past what a JS number holds exactly: the page reads them as strings (the
// reviver sees a number's source text) and sends them back as JSON numbers (JSON.rawJSON).
export function parse(text) {
  return JSON.parse(text, (name, value, context) =>
    name === "seed" && typeof value === "number" && context?.source ? context.source : value
  );
}

export function stringify(body) {
  return JSON.stringify(body, (name, value) =>
    name === "seed" && typeof value === "string" && /^\d+$/.test(value) && JSON.rawJSON ? JSON.rawJSON(value) : value
  );
}

export const key = () => sessionStorage.getItem(KEY_NAME) || "";
export function setKey(value) {
  if (value) sessionStorage.setItem(KEY_NAME, value);
  else sessionStorage.removeItem(KEY_NAME);
}
// Called with the error whenever the server answers 401: the page asks for the key.
export function onUnauthorized(handler) {
  unauthorized = handler;
}

function headers(extra = {}) {
  const h = { ...extra };
  if (key()) h.Authorization = `Bearer ${key()}`;
  return h;
}

async function errorOf(response) {
  let body = {};
  try {
    body = (await response.json()).error || {};
  } catch {
    body = { message: `the server answered ${response.status} ${response.statusText}` };
  }
  return new ApiError(response.status, body);
}

// fetch with the key; an answer that is not 2xx throws its ApiError. `json` sends a JSON body,
// `form` a FormData (multipart).
export async function request(path, { method = "GET", json, form, signal } = {}) {
  const init = { method, signal, headers: headers() };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401) unauthorized(error);
    throw error;
  }
  return response;
}

export const getJson = async (path, options) => parse(await (await request(path, options)).text());
export const postJson = async (path, json, options = {}) =>
  parse(await (await request(path, { ...options, method: "POST", json })).text());

// The events of GET /api/jobs/{id}/events, each as {event, data (the job)}, until the stream ends.
export async function* events(path, signal) {
  const response = await request(path, { signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const message = { event: "message", data: "" };
        for (const line of block.split(/\r?\n/)) {
          const colon = line.indexOf(":");
          if (colon <= 0) continue;
          const field = line.slice(0, colon);
          const text = line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") message.event = text;
          else if (field === "data") message.data += text;
        }
        if (message.data) yield { event: message.event, data: parse(message.data) };
      }
    }
  } finally {
    reader.releaseLock();
  }
}

const FINAL = new Set(["succeeded", "failed", "cancelled"]);

// Follow a job to its end through its events; `onJob` sees every state. Returns the final job.
export async function follow(jobId, onJob, signal) {
  let last = null;
  for await (const { data } of events(`/api/jobs/${jobId}/events`, signal)) {
    last = data;
    onJob(data);
    if (FINAL.has(data.state)) return data;
  }
  // The stream ended early (a proxy, a restart): the job's own answer says where it is.
  last = await getJson(`/api/jobs/${jobId}`, { signal });
  onJob(last);
  return FINAL.has(last.state) ? last : follow(jobId, onJob, signal);
}

// The audio of a URL as a Blob (with the key, which <audio src> could not send).
export async function blob(path, signal) {
  return (await request(path, { signal })).blob();
}

// Save what a URL answers as a file, named as the server names it.
export async function download(path, fallbackName) {
  const response = await request(path);
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(disposition);
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = match ? match[1] : fallbackName;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
