// The demo page: sign in as a demo user, start jobs, watch them live, cancel them,
// see notifications as toasts; admins also see the statistics, can broadcast, and follow
// the `ops` channel (every user's job errors, operators' messages) in a panel of its own.
// Plain DOM code over jobcast-client.js; every text from the server goes in as text.

import {
  JobcastClient,
  TERMINAL_STATES,
  codePointLength,
  compareEventIds,
  isTerminal,
} from "/static/jobcast-client.js";

const $ = (selector) => document.querySelector(selector);
const STATUS_LABELS = {
  queued: "Queued",
  started: "Started",
  processing: "Processing",
  retrying: "Retrying",
  cancelled: "Cancelled",
  completed: "Completed",
  failed: "Failed",
};
const ADMIN_ROLES = new Set(["ADMIN", "ROLE_ADMIN"]);
const EVENT_LOG_LIMIT = 60;
const OPS_FEED_LIMIT = 30;

let io = null; // socket.io-client, loaded from /static/vendor
const session = { token: null, user: null, demoUser: null, client: null, statsTimer: null, renewedAt: 0, ops: false };
const jobs = new Map(); // jobId -> job state shown on its card
const eventLog = [];

// Handy in the browser console (and for the browser tests).
window.jobcastDemo = { session, jobs, eventLog };

// --- small helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function formatEta(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  if (seconds < 1) return "less than a second left";
  if (seconds < 60) return `about ${Math.round(seconds)} s left`;
  const minutes = Math.floor(seconds / 60);
  return `about ${minutes} min ${Math.round(seconds - minutes * 60)} s left`;
}

function clock(ms) {
  return new Date(ms ?? Date.now()).toLocaleTimeString([], { hour12: false });
}

function showAlert(text, kind = "error") {
  const alert = $("#alert");
  alert.textContent = text;
  alert.dataset.kind = kind;
  alert.hidden = !text;
}

function jwtClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return {};
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    return { status: 0, body: { message: `The server is unreachable (${err.message})`, code: "network" } };
  }
  let payload = {};
  try {
    payload = await response.json();
  } catch {
    payload = { message: response.statusText };
  }
  if (response.status === 401) showAuthProblem(payload.code, payload.message);
  return { status: response.status, body: payload };
}

// --- toasts

function toast(level, title, message, { sticky = level === "error" || level === "critical" } = {}) {
  const close = el("button", { type: "button", class: "toast-close", "aria-label": "Dismiss" }, "×");
  const node = el(
    "div",
    { class: `toast toast-${level}`, role: level === "critical" || level === "error" ? "alert" : "status", dataset: { level } },
    el("div", { class: "toast-body" }, el("strong", {}, title), el("span", {}, message)),
    close,
  );
  close.addEventListener("click", () => node.remove());
  $("#toasts").prepend(node);
  if (!sticky) setTimeout(() => node.remove(), 15000);
  return node;
}

function onNotification(msg) {
  if (msg.type === "maintenance_notification") {
    const parts = [msg.message];
    if (msg.startsAt) parts.push(`starts ${clock(msg.startsAt)}`);
    if (msg.durationMinutes) parts.push(`for ${msg.durationMinutes} min`);
    toast("warning", "Maintenance", parts.join(" · "));
  } else {
    const level = ["info", "warning", "error", "critical"].includes(msg.level) ? msg.level : "info";
    toast(level, `System ${level}`, msg.message);
  }
}

// --- the ops channel (admins): job errors of every user, and messages sent to `ops`

async function joinOps() {
  const answer = await session.client.subscribeChannel("ops");
  session.ops = answer?.type === "subscribed";
  $("#ops-state").textContent = session.ops ? "subscribed" : `not subscribed (${answer?.code ?? answer?.type ?? "no answer"})`;
}

function addOpsItem(msg) {
  const isError = msg.type === "job_error";
  const level = isError ? "error" : ["info", "warning", "error", "critical"].includes(msg.level) ? msg.level : "info";
  const title = isError ? `job_error · ${msg.data?.code ?? "?"}` : `${level} · ${msg.channel}`;
  const detail = isError ? `${msg.error ?? ""}` : `${msg.message ?? ""}`;
  const extra = isError ? `job ${msg.jobId}` : Object.keys(msg.data ?? {}).length ? JSON.stringify(msg.data) : "";
  const item = el(
    "li",
    { class: "ops-item", dataset: { level, type: msg.type, eventId: msg.eventId ?? "" } },
    el("span", { class: "ops-time" }, clock(msg.timestamp)),
    el("strong", { class: "ops-title" }, title),
    el("span", { class: "ops-detail" }, detail),
    el("code", { class: "ops-extra" }, extra),
  );
  $("#ops-feed").prepend(item);
  while ($("#ops-feed").children.length > OPS_FEED_LIMIT) $("#ops-feed").lastElementChild.remove();
  $("#ops-empty").hidden = true;
}

function onChannelMessage(msg) {
  if (msg.channel === "ops") addOpsItem(msg);
  else toast(["info", "warning", "error", "critical"].includes(msg.level) ? msg.level : "info", `#${msg.channel}`, msg.message);
}

function onJobError(msg) {
  if (session.ops) addOpsItem(msg);
  // Another user's job reaches an admin through `ops` only: no card for it.
  if (jobs.has(msg.jobId) || !session.ops) onJobMessage(msg);
}

async function sendChannelMessage(form) {
  const data = new FormData(form);
  const body = { message: data.get("message"), level: data.get("level") };
  const channel = encodeURIComponent(data.get("channel"));
  const { status, body: answer } = await api("POST", `/api/v1/websocket/broadcast/channel/${channel}`, body);
  if (status !== 200) toast("error", "Not sent", `${answer.message} (${answer.code ?? status})`);
}

// --- connection state

const STATE_TEXT = {
  idle: "not connected",
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "reconnecting…",
  refused: "refused",
  expired: "session expired",
  disconnected: "disconnected",
};

function renderConnection() {
  const client = session.client;
  const box = $("#connection");
  const state = client?.state ?? "idle";
  let text = STATE_TEXT[state] ?? state;
  const detail = client?.detail;
  if (state === "connected" && client.recovered) text += " · recovered";
  if (state === "reconnecting" && detail?.attempt) text += ` (attempt ${detail.attempt})`;
  if ((state === "refused" || state === "expired") && detail?.code) text += ` (${detail.code})`;
  box.dataset.state = state;
  $("#conn-state").textContent = text;
  const transport = state === "connected" ? client.transport : null;
  box.dataset.transport = transport ?? "";
  $("#conn-transport").textContent = transport ?? "—";
  if (state === "expired") showAuthProblem(detail?.code ?? "token_expired", detail?.message);
  if (state === "refused") showAuthProblem(detail?.code, detail?.message);
}

function showAuthProblem(code, message) {
  if (code === "token_expired" || code === "session_expired") {
    showAlert(`Session expired: ${message || "the token has expired"} (${code}). Pick a demo user to sign in again.`);
  } else {
    showAlert(`Connection refused: ${message || "the server refused the token"} (${code || "unknown"}).`);
  }
}

// --- jobs

function jobCard(job) {
  const bar = el("div", { class: "bar-fill" });
  const progress = el(
    "div",
    { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": 0, "aria-label": `Progress of ${job.topic}` },
    bar,
  );
  const cancel = el("button", { type: "button", class: "small danger", onclick: () => cancelJob(job.jobId) }, "Cancel");
  const card = el(
    "li",
    { class: "job", dataset: { jobId: job.jobId } },
    el(
      "div",
      { class: "job-head" },
      el("div", {}, el("h3", { class: "job-topic" }, job.topic), el("code", { class: "job-id", title: job.jobId }, job.jobId)),
      el("span", { class: "badge" }),
    ),
    el("div", { class: "job-progress" }, progress, el("span", { class: "percent" }, "0%")),
    el("p", { class: "job-line" }, el("span", { class: "job-message" }), el("span", { class: "job-eta" })),
    // The job's live output (job_output), growing as the task writes it.
    el("pre", { class: "job-output", hidden: true, "aria-label": `Output of ${job.topic}` }),
    el("div", { class: "job-outcome" }),
    el("div", { class: "job-actions" }, cancel),
  );
  job.el = card;
  return card;
}

function renderJob(job) {
  const card = job.el;
  const percent = Math.max(0, Math.min(100, Math.round(job.progress ?? 0)));
  card.dataset.status = job.status;
  card.dataset.progress = String(percent);
  const badge = card.querySelector(".badge");
  badge.textContent = STATUS_LABELS[job.status] ?? job.status;
  badge.dataset.status = job.status;
  card.querySelector(".bar-fill").style.width = `${percent}%`;
  card.querySelector(".bar").setAttribute("aria-valuenow", String(percent));
  card.querySelector(".percent").textContent = `${percent}%`;
  card.querySelector(".job-message").textContent = job.message ?? "";
  card.querySelector(".job-eta").textContent = job.finished ? "" : formatEta(job.eta);
  renderOutput(job);
  const outcome = card.querySelector(".job-outcome");
  outcome.replaceChildren();
  if (job.status === "completed" && job.result) {
    const rows = Object.entries(job.result)
      .filter(([key, value]) => key !== "content" && ["string", "number", "boolean"].includes(typeof value))
      .map(([key, value]) => [el("dt", {}, key), el("dd", {}, String(value))]);
    outcome.append(el("dl", { class: "result" }, rows));
  }
  if (job.status === "failed") {
    outcome.append(el("p", { class: "error-text" }, job.error ?? "The job failed", job.errorCode ? el("code", {}, ` ${job.errorCode}`) : null));
  }
  const cancel = card.querySelector(".job-actions button");
  cancel.hidden = job.finished;
  $("#jobs-empty").hidden = jobs.size > 0;
}

/** Show the job's output so far; keep it scrolled to the end while it grows (unless the
 * reader scrolled up). */
function renderOutput(job) {
  const pre = job.el.querySelector(".job-output");
  const text = job.output ?? "";
  if (pre.textContent === text) return;
  const following = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = text;
  pre.hidden = text === "";
  pre.dataset.length = String(job.outputLength ?? 0);
  if (following) pre.scrollTop = pre.scrollHeight;
}

function onJobOutput(msg) {
  const job = jobs.get(msg.jobId) ?? addJob({ jobId: msg.jobId, topic: "Job" });
  job.output = session.client.output(msg.jobId); // assembled by offset in jobcast-client.js
  job.outputLength = codePointLength(job.output);
  job.outputChunks = (job.outputChunks ?? 0) + 1;
  renderOutput(job);
}

function addJob(fields, { prepend = true } = {}) {
  let job = jobs.get(fields.jobId);
  if (!job) {
    job = { topic: "Job", status: "queued", progress: 0, message: "", finished: false, eventId: null, ...fields };
    jobs.set(job.jobId, job);
    const card = jobCard(job);
    if (prepend) $("#jobs").prepend(card);
    else $("#jobs").append(card);
  }
  renderJob(job);
  return job;
}

function isStale(job, eventId) {
  if (!eventId || !job.eventId) return false;
  try {
    return compareEventIds(eventId, job.eventId) < 0;
  } catch {
    return false;
  }
}

function onJobMessage(msg) {
  const job = jobs.get(msg.jobId) ?? addJob({ jobId: msg.jobId, topic: "Job" });
  if (job.finished || isStale(job, msg.eventId)) return; // a terminal state is final
  const before = job.status;
  if (msg.eventId) job.eventId = msg.eventId;
  if (msg.snapshot && typeof msg.data?.output === "string") {
    job.output = session.client.output(msg.jobId);
    job.outputLength = codePointLength(job.output);
    job.outputTruncated = Boolean(msg.data.outputTruncated);
  }
  if (msg.type === "job_status_update") {
    const data = msg.data ?? {};
    job.status = data.status ?? job.status;
    if (typeof data.progress === "number") job.progress = data.progress;
    if (data.message !== undefined) job.message = data.message;
    job.eta = data.etaSeconds;
    if (data.status === "retrying" && data.attempt) {
      job.message = `${data.message ?? "Retrying"} (retry ${data.attempt}, in ${data.retryInSeconds ?? "?"} s)`;
    }
  } else if (msg.type === "job_completed") {
    job.status = "completed";
    job.progress = 100;
    job.result = msg.result;
    job.message = "";
  } else if (msg.type === "job_error") {
    job.status = "failed";
    job.error = msg.error;
    job.errorCode = msg.data?.code;
    job.message = "";
  }
  job.finished = isTerminal(msg);
  renderJob(job);
  // Screen readers hear status changes, not every progress step.
  if (job.status !== before) $("#announcer").textContent = `${job.topic}: ${STATUS_LABELS[job.status] ?? job.status}`;
}

function fromRest(rest) {
  return {
    jobId: rest.jobId,
    status: rest.status,
    progress: rest.status === "completed" ? 100 : rest.progress ?? 0,
    message: rest.status === "completed" ? "" : rest.message ?? "",
    eta: rest.etaSeconds,
    result: rest.result,
    error: rest.error,
    errorCode: rest.errorCode,
    eventId: rest.eventId ?? null,
    finished: TERMINAL_STATES.has(rest.status),
    // The list carries no output; a finished job's result holds it whole (`content`).
    ...(typeof rest.result?.content === "string" ? { output: rest.result.content } : {}),
  };
}

async function loadJobs() {
  const { status, body } = await api("GET", "/api/v1/jobs?limit=20");
  if (status !== 200) return;
  for (const rest of body.data.jobs) {
    const state = fromRest(rest);
    const known = jobs.get(rest.jobId);
    if (!known) {
      addJob({ topic: `Job ${rest.jobId.slice(0, 8)}`, ...state }, { prepend: false });
    } else if (!known.finished && state.eventId && !isStale(known, state.eventId)) {
      Object.assign(known, state);
      renderJob(known);
    }
    if (!state.finished) session.client?.subscribe(rest.jobId);
  }
}

async function startJob(form) {
  const data = new FormData(form);
  const body = {
    topic: data.get("topic").trim(),
    sections: Number(data.get("sections")),
    secondsPerSection: Number(data.get("secondsPerSection")),
  };
  if (data.get("failAtSection")) body.failAtSection = Number(data.get("failAtSection"));
  const button = $("#start-job");
  button.disabled = true;
  try {
    const { status, body: answer } = await api("POST", "/api/v1/jobs", body);
    if (status !== 202) {
      toast("error", "Job not started", `${answer.message} (${answer.code ?? status})`);
      return;
    }
    const jobId = answer.data.jobId;
    addJob({ jobId, topic: body.topic, status: "queued", message: "Waiting for a worker" });
    const reply = await session.client.subscribe(jobId);
    if (reply?.type === "error") toast("error", "Not subscribed", `${reply.message} (${reply.code})`);
  } finally {
    button.disabled = false;
  }
}

async function cancelJob(jobId) {
  const job = jobs.get(jobId);
  const button = job?.el.querySelector(".job-actions button");
  if (button) button.disabled = true;
  const { status, body } = await api("DELETE", `/api/v1/jobs/${encodeURIComponent(jobId)}`);
  if (button) button.disabled = false;
  if (status === 409) toast("info", "Already finished", body.message);
  else if (status !== 200) toast("error", "Not cancelled", `${body.message} (${body.code ?? status})`);
}

// --- event log

function logEvent(msg) {
  // Output chunks show in their job's card (and are counted there), not in the log.
  if (msg.type !== "job_output") addToLog(msg);
  const stats = session.client.stats;
  $("#counters").textContent = `${stats.received} received, ${stats.duplicates} duplicates dropped`;
  $("#last-event-id").textContent = session.client.lastEventId ?? "—";
}

function addToLog(msg) {
  const text = [
    clock(msg.timestamp),
    msg.type,
    msg.snapshot ? "(snapshot)" : "",
    msg.jobId ? msg.jobId.slice(0, 8) : "",
    msg.data?.status ?? "",
    typeof msg.data?.progress === "number" ? `${Math.round(msg.data.progress)}%` : "",
    typeof msg.data?.outputLength === "number" ? `output ${msg.data.outputLength}` : "",
    msg.eventId ? `#${msg.eventId}` : "",
  ]
    .filter(Boolean)
    .join(" ");
  eventLog.push(msg);
  if (eventLog.length > EVENT_LOG_LIMIT) eventLog.shift();
  const list = $("#events");
  list.prepend(el("li", {}, text));
  while (list.children.length > EVENT_LOG_LIMIT) list.lastChild.remove();
}

// --- admin

const STAT_ROWS = [
  ["activeConnections", "Active connections"],
  ["activeUsers", "Active users"],
  ["activeJobSubscriptions", "Job subscriptions"],
  ["activeChannelSubscriptions", "Channel subscriptions"],
  ["instances", "Notifier instances"],
  ["transport:websocket", "…over WebSocket"],
  ["transport:polling", "…over long-polling"],
  ["transport:native", "…native WebSocket"],
  ["eventsDelivered", "Events delivered"],
];

async function refreshStats() {
  const { status, body } = await api("GET", "/api/v1/websocket/stats");
  const tbody = $("#stats tbody");
  if (status !== 200) {
    $("#stats-updated").textContent = `Statistics unavailable: ${body.message}`;
    return;
  }
  const data = body.data;
  const value = (key) => (key.startsWith("transport:") ? data.connectionsByTransport?.[key.slice(10)] : data[key]);
  tbody.replaceChildren(
    ...STAT_ROWS.map(([key, label]) =>
      el("tr", { dataset: { key } }, el("th", { scope: "row" }, label), el("td", {}, String(value(key) ?? 0))),
    ),
  );
  $("#stats-updated").textContent = `Updated ${clock()}`;
}

async function broadcast(form, kind) {
  const data = new FormData(form);
  let body;
  if (kind === "system") {
    body = { message: data.get("message"), level: data.get("level") };
  } else {
    body = { message: data.get("message") };
    const startsIn = data.get("startsIn");
    if (startsIn !== "") body.startsAt = Date.now() + Number(startsIn) * 60000;
    if (data.get("durationMinutes") !== "") body.durationMinutes = Number(data.get("durationMinutes"));
  }
  const { status, body: answer } = await api("POST", `/api/v1/websocket/broadcast/${kind}`, body);
  if (status !== 200) toast("error", "Not sent", `${answer.message} (${answer.code ?? status})`);
}

// --- sessions

function endSession() {
  session.client?.close();
  session.client = null;
  clearInterval(session.statsTimer);
  session.statsTimer = null;
  jobs.clear();
  eventLog.length = 0;
  $("#jobs").replaceChildren();
  $("#events").replaceChildren();
  session.ops = false;
  $("#ops-feed").replaceChildren();
  $("#ops-empty").hidden = false;
  $("#ops-state").textContent = "not subscribed";
}

function transportChoice() {
  return $("#transport").value;
}

async function renewDemoToken() {
  if (!session.demoUser) {
    toast("warning", "Session expiring", "Your token expires soon; sign in again to continue.");
    return;
  }
  // At most once a minute (a server warning long before expiry would otherwise loop).
  if (Date.now() - (session.renewedAt ?? 0) < 60000) return;
  session.renewedAt = Date.now();
  const response = await fetch("/api/v1/demo/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: session.demoUser }),
  });
  if (!response.ok) return;
  const { data } = await response.json();
  session.token = data.token;
  const answer = await session.client.refreshToken(data.token);
  if (answer?.type === "token_refreshed") toast("info", "Session renewed", "A fresh demo token was sent.");
}

function startSession(token, user, demoUser = null) {
  endSession();
  showAlert("");
  session.token = token;
  session.user = user;
  session.demoUser = demoUser;
  session.renewedAt = 0;
  const roles = user.roles ?? [];
  const isAdmin = roles.some((role) => ADMIN_ROLES.has(role));
  $("#conn-user").textContent = `${user.label ?? user.username ?? user.userId}${isAdmin ? " (admin)" : ""}`;
  for (const button of document.querySelectorAll("#users button")) {
    button.setAttribute("aria-pressed", String(button.dataset.user === demoUser));
  }
  for (const id of ["#start", "#jobs-panel", "#log-panel"]) $(id).hidden = false;
  $("#admin").hidden = !isAdmin;
  $("#jobs-empty").hidden = false;

  const client = new JobcastClient({ io, url: location.origin, token, transport: transportChoice() });
  session.client = client;
  window.jobcastDemo.client = client;
  client.on("state", () => renderConnection());
  client.on("transport", () => renderConnection());
  client.on("job_status_update", onJobMessage);
  client.on("job_completed", onJobMessage);
  client.on("job_output", onJobOutput);
  client.on("job_error", onJobError);
  client.on("channel_message", onChannelMessage);
  client.on("system_notification", onNotification);
  client.on("maintenance_notification", onNotification);
  client.on("session_expiring", () => renewDemoToken());
  client.on("error", (msg) => toast("error", `Error: ${msg.code}`, msg.message));
  client.on("connection_established", (msg) => {
    renderConnection();
    if (isAdmin) joinOps(); // on every (re)connect: a new connection holds no channel
    // After a reconnect whose replay was incomplete, REST tells where things stand.
    if (client.stats.reconnects > 0 && !msg.recovered) loadJobs();
  });
  client.on("*", logEvent);
  client.connect();
  renderConnection();
  loadJobs();
  if (isAdmin) {
    refreshStats();
    session.statsTimer = setInterval(refreshStats, 2000);
  }
}

async function signIn(demoUser) {
  const response = await fetch("/api/v1/demo/token", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ user: demoUser }),
  });
  const payload = await response.json().catch(() => ({}));
  if (!response.ok) {
    showAlert(`No demo token: ${payload.message ?? response.statusText}`);
    return;
  }
  const { token, ...user } = payload.data;
  startSession(token, user, demoUser);
}

async function loadUsers() {
  const response = await fetch("/api/v1/demo/users", { headers: { Accept: "application/json" } });
  if (!response.ok) {
    $("#demo-hint").textContent = "Demo mode is off (JOBCAST_DEMO is not set): use your own token below.";
    $("#signin details").open = true;
    return;
  }
  const { data } = await response.json();
  $("#users").replaceChildren(
    ...data.users.map((user) =>
      el(
        "button",
        { type: "button", class: "user", dataset: { user: user.user }, "aria-pressed": "false", onclick: () => signIn(user.user) },
        el("strong", {}, user.label),
        el("small", {}, user.username),
        user.roles.length ? el("span", { class: "role" }, user.roles.join(", ")) : null,
      ),
    ),
  );
}

async function main() {
  const params = new URLSearchParams(location.search);
  const select = $("#transport");
  if (["auto", "websocket", "polling"].includes(params.get("transport"))) select.value = params.get("transport");
  select.addEventListener("change", () => {
    const url = new URL(location.href);
    url.searchParams.set("transport", select.value);
    history.replaceState(null, "", url);
    if (session.token) startSession(session.token, session.user, session.demoUser);
  });
  try {
    ({ io } = await import("/static/vendor/socket.io.esm.min.js"));
  } catch (err) {
    showAlert("socket.io-client could not be loaded from /static/vendor: run `make web` (npm ci) and restart the server.");
    throw err;
  }
  $("#job-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startJob(event.target);
  });
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("#own-token").value.trim();
    const claims = jwtClaims(token);
    const roles = Array.isArray(claims.roles) ? claims.roles : claims.roles ? [claims.roles] : [];
    startSession(token, { userId: claims.sub, username: claims.username ?? claims.email, label: claims.username ?? `user ${claims.sub ?? "?"}`, roles });
  });
  $("#broadcast-form").addEventListener("submit", (event) => {
    event.preventDefault();
    broadcast(event.target, "system");
  });
  $("#maintenance-form").addEventListener("submit", (event) => {
    event.preventDefault();
    broadcast(event.target, "maintenance");
  });
  $("#channel-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendChannelMessage(event.target);
  });
  $("#stats-refresh").addEventListener("click", refreshStats);
  await loadUsers();
  document.body.dataset.ready = "true";
}

main();
