#!/usr/bin/env node
// Socket.IO load generator for jobcast's benchmark suite.
//
//   node loadgen.js '<json params>'      (or  node loadgen.js @params.json)
//
// Opens `clients` Socket.IO connections (client i authenticates as user <userPrefix>i and,
// with `subscribe`, subscribes to job <jobPrefix>i), prints {"event":"ready",...} on stdout,
// then obeys JSON commands read from stdin, one per line:
//   {"cmd":"reset"}                         forget what was received so far
//   {"cmd":"wait","kind":"job","sent":S,"jobs":J,"quietMs":..,"timeoutMs":..}
//        wait until every job has its last event (the producer sends event k to job k % J
//        with per-job number n = floor(k / J) + 1), or nothing arrived for quietMs, or
//        timeoutMs passed; then print {"event":"stats",...} and reset
//   {"cmd":"wait","kind":"broadcast","expect":N,...}   wait for N system notifications
//   {"cmd":"stop"}                          close every connection and exit
// With `soak: true` (bench/soak.py) the clients follow jobs that start and finish (see the
// soak section below) and some reconnect every minute; {"cmd":"report"} prints what each
// client received.
// Progress goes to stderr. The process always ends by itself: at `deadlineS` at the latest.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const readline = require("readline");
const { io } = require("socket.io-client");

const raw = process.argv[2] || "{}";
const P = Object.assign(
  {
    urls: ["http://127.0.0.1:8080"],
    path: "/ws/job-status",
    transports: ["websocket"],
    clients: 10,
    secret: "bench-secret",
    userPrefix: "u",
    jobPrefix: "j",
    subscribe: true,
    concurrency: 100,
    connectTimeoutMs: 20000,
    readyTimeoutMs: 120000,
    deadlineS: 600,
    label: "",
    soak: false,
    churnEveryS: 60,
    churnFraction: 0.1,
    churnSpreadS: 20,
    churnGapMs: 2000,
  },
  JSON.parse(raw.startsWith("@") ? fs.readFileSync(raw.slice(1), "utf8") : raw),
);

// Client i connects to urls[urlOf[i]] when the orchestrator gives that list (W8 places
// users on notifiers by partition), else to urls[i % urls.length].
const urlOf = (i) => (P.urlOf ? P.urlOf[i] : i % P.urls.length);
const now = () => performance.timeOrigin + performance.now(); // epoch ms, sub-ms precision
const log = (msg) => process.stderr.write(`  [loadgen${P.label ? " " + P.label : ""}] ${msg}\n`);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// --- HS256 JWT, the same claims as notifier.edge.auth.mint_token
const b64url = (buf) => Buffer.from(buf).toString("base64url");
const HEADER = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
function token(sub) {
  const iat = Math.floor(Date.now() / 1000);
  const body = b64url(JSON.stringify({ sub, iat, exp: iat + 3600 }));
  const sig = crypto.createHmac("sha256", P.secret).update(`${HEADER}.${body}`).digest();
  return `${HEADER}.${body}.${b64url(sig)}`;
}

// --- measurement state (reset between measurements)
let S;
function resetStats() {
  S = {
    received: 0,
    delays: [],
    recvAt: [], // receive time of each delay, to see when the slow ones happened
    minSentAt: Infinity,
    firstRecv: Infinity,
    lastRecv: 0,
    lastSeq: new Int32Array(P.clients), // per client (= per job): highest n received
    outOfOrder: 0,
    perUrl: new Array(P.urls.length).fill(0),
    broadcasts: 0,
    lastActivity: now(),
  };
}
resetStats();

const sockets = new Array(P.clients).fill(null);
let connected = 0;
let subscribed = 0;
let failed = 0;
let disconnects = 0;
const errors = {};
let measuring = false;

function onJob(i, msg) {
  if (!msg || msg.snapshot) return; // the snapshot answers the subscription, not an event
  const t = now();
  const data = msg.data || {};
  const sentAt = Number(data.sentAt);
  const n = Number(data.n) | 0;
  S.received += 1;
  S.perUrl[urlOf(i)] += 1;
  if (Number.isFinite(sentAt)) {
    S.delays.push(t - sentAt);
    S.recvAt.push(t);
    if (sentAt < S.minSentAt) S.minSentAt = sentAt;
  }
  if (t < S.firstRecv) S.firstRecv = t;
  S.lastRecv = t;
  S.lastActivity = t;
  if (n <= S.lastSeq[i]) S.outOfOrder += 1;
  else S.lastSeq[i] = n;
}

const SENT_AT = /sentAt=([0-9.]+)/;
function onBroadcast(i, msg) {
  const t = now();
  let sentAt = Number(msg && msg.sentAt);
  if (!Number.isFinite(sentAt)) {
    const m = SENT_AT.exec((msg && msg.message) || "");
    sentAt = m ? Number(m[1]) : NaN;
  }
  S.received += 1;
  S.broadcasts += 1;
  S.perUrl[urlOf(i)] += 1;
  if (Number.isFinite(sentAt)) {
    S.delays.push(t - sentAt);
    if (sentAt < S.minSentAt) S.minSentAt = sentAt;
  }
  if (t < S.firstRecv) S.firstRecv = t;
  S.lastRecv = t;
  S.lastActivity = t;
}

function openClient(i) {
  return new Promise((resolve) => {
    const sub = `${P.userPrefix}${i}`;
    const socket = io(P.urls[urlOf(i)], {
      path: P.path,
      transports: P.transports,
      auth: { token: token(sub) },
      forceNew: true, // one Engine.IO connection per client, no multiplexing
      reconnection: false,
      timeout: P.connectTimeoutMs,
    });
    sockets[i] = socket;
    let settled = false;
    const done = (ok, why) => {
      if (settled) return;
      settled = true;
      if (!ok) {
        failed += 1;
        errors[why] = (errors[why] || 0) + 1;
      }
      resolve();
    };
    socket.on("connect", () => {
      connected += 1;
      if (!P.subscribe) return done(true);
      socket.emit("subscribe_job", { type: "subscribe_job", jobId: `${P.jobPrefix}${i}` });
    });
    socket.on("subscribed", () => {
      subscribed += 1;
      done(true);
    });
    socket.on("error", (msg) => done(false, `error:${(msg && msg.code) || "?"}`));
    socket.on("connect_error", (err) => done(false, `connect_error:${err && err.message}`));
    socket.on("disconnect", (reason) => {
      disconnects += 1;
      if (measuring) errors[`disconnect:${reason}`] = (errors[`disconnect:${reason}`] || 0) + 1;
      done(false, `disconnect:${reason}`);
    });
    socket.on("job_status_update", (msg) => onJob(i, msg));
    socket.on("system_notification", (msg) => onBroadcast(i, msg));
  });
}

async function connectAll() {
  const t0 = now();
  let next = 0;
  const progress = setInterval(
    () => log(`connected ${connected}/${P.clients}, subscribed ${subscribed}, failed ${failed}`),
    2000,
  );
  const worker = async () => {
    while (next < P.clients) await openClient(next++);
  };
  const ramp = Promise.all(Array.from({ length: Math.min(P.concurrency, P.clients) }, worker));
  const limit = new Promise((r) => setTimeout(r, P.readyTimeoutMs));
  await Promise.race([ramp, limit]);
  clearInterval(progress);
  return now() - t0;
}

function percentile(sorted, q) {
  if (!sorted.length) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[idx];
}

function snapshot(cmd) {
  const d = Float64Array.from(S.delays).sort();
  // the slowest deliveries of job events and when they arrived (s after the first
  // publish): periodic stalls of the server show up as evenly spaced clusters
  const slowest = [];
  if (cmd.kind === "job" && S.delays.length) {
    const cut = percentile(d, 0.995);
    for (let k = 0; k < S.delays.length && slowest.length < 200; k++) {
      if (S.delays[k] >= cut) {
        slowest.push([
          Math.round((S.recvAt[k] - S.minSentAt) / 10) / 100,
          Math.round(S.delays[k] * 10) / 10,
        ]);
      }
    }
  }
  const r3 = (x) => (x === null || !Number.isFinite(x) ? null : Math.round(x * 1000) / 1000);
  const stats = {
    event: "stats",
    kind: cmd.kind,
    received: S.received,
    outOfOrder: S.outOfOrder,
    perUrl: S.perUrl,
    delayMs: {
      count: d.length,
      p50: r3(percentile(d, 0.5)),
      p95: r3(percentile(d, 0.95)),
      p99: r3(percentile(d, 0.99)),
      max: r3(d.length ? d[d.length - 1] : null),
      mean: r3(d.length ? d.reduce((a, b) => a + b, 0) / d.length : null),
    },
    firstSentAt: r3(S.minSentAt),
    firstRecv: r3(S.firstRecv),
    lastRecv: r3(S.lastRecv),
    connected: connected - disconnects,
    disconnects,
    errors,
    slowest,
  };
  if (cmd.kind === "job") {
    let finalMissing = 0;
    for (let j = 0; j < Math.min(cmd.jobs, P.clients); j++) {
      if (S.lastSeq[j] < expectedLast(j, cmd.sent, cmd.jobs)) finalMissing += 1;
    }
    stats.sent = cmd.sent;
    stats.finalMissing = finalMissing;
  } else {
    stats.expect = cmd.expect;
  }
  return stats;
}

// the producer sends event k to job k % J with n = floor(k / J) + 1
function expectedLast(j, sent, jobs) {
  return j < sent ? Math.floor((sent - 1 - j) / jobs) + 1 : 0;
}

function complete(cmd) {
  if (cmd.kind === "broadcast") return S.broadcasts >= cmd.expect;
  const jobs = Math.min(cmd.jobs, P.clients);
  for (let j = 0; j < jobs; j++) {
    if (S.lastSeq[j] < expectedLast(j, cmd.sent, cmd.jobs)) return false;
  }
  return true;
}

function waitFor(cmd) {
  const quietMs = cmd.quietMs || 3000;
  const timeoutMs = cmd.timeoutMs || 60000;
  const t0 = now();
  return new Promise((resolve) => {
    const tick = () => {
      const t = now();
      const why = complete(cmd)
        ? "complete"
        : t - S.lastActivity > quietMs && t - t0 > quietMs
          ? "quiet"
          : t - t0 > timeoutMs
            ? "timeout"
            : null;
      if (why) {
        const stats = snapshot(cmd);
        stats.ended = why;
        resetStats();
        return resolve(stats);
      }
      setTimeout(tick, 5);
    };
    tick();
  });
}

function stopAll(code) {
  // Close every connection and give the close packets (a POST on polling) a moment to
  // reach the server, so it is not left holding long-poll requests.
  for (const s of sockets) if (s) s.close();
  const t0 = now();
  const check = () => {
    const open = sockets.some((s) => s && s.io.engine && s.io.engine.readyState !== "closed");
    if (!open || now() - t0 > 1500) process.exit(code);
    else setTimeout(check, 20);
  };
  setTimeout(check, 50);
}

// --- soak mode (bench/soak.py): client i is user <userPrefix>i; its jobs are
// <jobPrefix>i-0, -1, ... one after the other. It follows its current job (subscribe_job)
// and moves to the next when a job's job_completed arrives (the owner route delivers it
// whatever the subscription). Every `churnEveryS`, a fraction `churnFraction` of the
// clients (spread over `churnSpreadS`) closes, waits `churnGapMs`, and connects again,
// every other one with auth.lastEventId = the newest eventId it received. Recorded per
// client: job_completed events per job, completed snapshots, broadcasts by id, sessions.
const SOAK_BCAST = /bench broadcast (\d+)/;
const soakCounts = { progress: 0, snapshots: 0, terminals: 0, broadcasts: 0, unplanned: 0 };
let soakChurned = 0;
let soakChurning = false;
function idKey(id) {
  const [ms, seq] = String(id).split("-");
  return [Number(ms), Number(seq)];
}
function newer(a, b) {
  if (!b) return true;
  const [am, as] = idKey(a);
  const [bm, bs] = idKey(b);
  return am > bm || (am === bm && as > bs);
}
function soakState(i) {
  return { cur: 0, last: null, t: [], snap: [], b: {}, s: [], errors: {}, dup: {}, dupEx: [], tid: [] };
}
const soak = [];
function soakSeq(i, jobId) {
  const prefix = `${P.jobPrefix}${i}-`;
  if (typeof jobId !== "string" || !jobId.startsWith(prefix)) return -1;
  return Number(jobId.slice(prefix.length));
}
function soakFollow(i, socket, seq) {
  const st = soak[i];
  if (seq + 1 <= st.cur) return;
  socket.emit("unsubscribe_job", { type: "unsubscribe_job", jobId: `${P.jobPrefix}${i}-${st.cur}` });
  st.cur = seq + 1;
  socket.emit("subscribe_job", { type: "subscribe_job", jobId: `${P.jobPrefix}${i}-${st.cur}` });
}
function soakOpen(i, withLast) {
  return new Promise((resolve) => {
    const st = soak[i];
    const auth = { token: token(`${P.userPrefix}${i}`) };
    if (withLast && st.last) auth.lastEventId = st.last;
    // session: [opened, established, closed, withLastEventId, recovered]
    const session = [now(), 0, 0, auth.lastEventId ? 1 : 0, -1];
    st.s.push(session);
    const socket = io(P.urls[urlOf(i)], {
      path: P.path,
      transports: P.transports,
      auth,
      forceNew: true,
      reconnection: false,
      timeout: P.connectTimeoutMs,
    });
    sockets[i] = socket;
    socket.soakPlanned = false;
    let settled = false;
    const done = () => {
      if (!settled) {
        settled = true;
        resolve();
      }
    };
    const err = (why) => {
      st.errors[why] = (st.errors[why] || 0) + 1;
      errors[why] = (errors[why] || 0) + 1;
    };
    socket.on("connect", () => {
      connected += 1;
      socket.emit("subscribe_job", { type: "subscribe_job", jobId: `${P.jobPrefix}${i}-${st.cur}` });
      done();
    });
    socket.on("connection_established", (msg) => {
      session[1] = now();
      session[4] = msg && msg.recovered ? 1 : 0;
    });
    socket.on("error", (msg) => err(`error:${(msg && msg.code) || "?"}`));
    socket.on("connect_error", (e) => {
      err(`connect_error:${e && e.message}`);
      session[2] = now();
      done();
      if (!stopping) setTimeout(() => soakOpen(i, true), 1000);
    });
    socket.on("disconnect", (reason) => {
      disconnects += 1;
      session[2] = now();
      if (!socket.soakPlanned && !stopping) {
        // the server closed it: come back as a real client would, with lastEventId
        soakCounts.unplanned += 1;
        err(`disconnect:${reason}`);
        setTimeout(() => soakOpen(i, true), 1000);
      }
      done();
    });
    const seen = (msg) => {
      if (msg && msg.eventId && !msg.snapshot && newer(msg.eventId, st.last)) st.last = msg.eventId;
    };
    socket.on("job_status_update", (msg) => {
      if (!msg) return;
      const seq = soakSeq(i, msg.jobId);
      if (msg.snapshot) {
        soakCounts.snapshots += 1;
        if (msg.data && msg.data.status === "completed" && seq >= 0) {
          st.snap[seq] = (st.snap[seq] || 0) + 1;
          soakFollow(i, socket, seq);
        }
        return;
      }
      soakCounts.progress += 1;
      seen(msg);
    });
    socket.on("job_completed", (msg) => {
      const seq = soakSeq(i, msg && msg.jobId);
      if (seq < 0) return err("foreign_job");
      if (msg.snapshot) {
        // a finished job's snapshot is its terminal message again, same eventId, marked
        // snapshot (what subscribing to a job that completed meanwhile answers)
        soakCounts.snapshots += 1;
        st.snap[seq] = (st.snap[seq] || 0) + 1;
        return soakFollow(i, socket, seq);
      }
      seen(msg);
      soakCounts.terminals += 1;
      st.t[seq] = (st.t[seq] || 0) + 1;
      if (st.t[seq] > 1) {
        // which session the repeat came in: "lastEventId/recovered" flags of that session
        const kind = `withLastEventId=${session[3]},recovered=${session[4]}`;
        st.dup[kind] = (st.dup[kind] || 0) + 1;
        if (st.dupEx.length < 3) {
          // [job, first eventId, this eventId, session number, ms since it was established]
          const at = session[1] ? Math.round(now() - session[1]) : null;
          st.dupEx.push([seq, st.tid[seq], msg.eventId, st.s.indexOf(session), at, auth.lastEventId || null]);
        }
      } else {
        st.tid[seq] = msg.eventId;
      }
      soakFollow(i, socket, seq);
    });
    socket.on("system_notification", (msg) => {
      seen(msg);
      const m = SOAK_BCAST.exec((msg && msg.message) || "");
      if (!m) return;
      soakCounts.broadcasts += 1;
      st.b[m[1]] = (st.b[m[1]] || 0) + 1;
      if (st.b[m[1]] > 1) {
        const kind = `broadcast:withLastEventId=${session[3]},recovered=${session[4]}`;
        st.dup[kind] = (st.dup[kind] || 0) + 1;
      }
    });
  });
}
function soakChurn() {
  if (stopping) return;
  const n = Math.round(P.clients * P.churnFraction);
  const picked = new Set();
  for (let guard = 0; picked.size < n && guard < n * 20; guard++) {
    picked.add(Math.floor(Math.random() * P.clients));
  }
  const spread = P.churnSpreadS * 1000;
  for (const i of picked) {
    setTimeout(() => {
      const socket = sockets[i];
      if (stopping || !socket || !socket.connected) return;
      socket.soakPlanned = true;
      socket.close();
      soakChurned += 1;
      const withLast = soakChurned % 2 === 0; // every other reconnect with lastEventId
      setTimeout(() => {
        if (!stopping) soakOpen(i, withLast);
      }, P.churnGapMs);
    }, Math.random() * spread);
  }
}
let stopping = false;
async function soakMain() {
  for (let i = 0; i < P.clients; i++) soak.push(soakState(i));
  const t0 = now();
  let next = 0;
  const worker = async () => {
    while (next < P.clients) await soakOpen(next++, false);
  };
  const progress = setInterval(() => log(`connected ${connected}/${P.clients}`), 2000);
  await Promise.race([
    Promise.all(Array.from({ length: Math.min(P.concurrency, P.clients) }, worker)),
    new Promise((r) => setTimeout(r, P.readyTimeoutMs)),
  ]);
  clearInterval(progress);
  out({ event: "ready", clients: P.clients, connected: connected - disconnects, errors,
        connectMs: Math.round(now() - t0) }); // prettier-ignore
  let churnTimer = null;
  const status = setInterval(() => {
    const open = sockets.filter((s) => s && s.connected).length;
    log(`open ${open}, churned ${soakChurned}, ${JSON.stringify(soakCounts)}`);
  }, 30000);
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    if (!line.trim()) return;
    const cmd = JSON.parse(line);
    if (cmd.cmd === "churn") {
      if (!churnTimer) churnTimer = setInterval(soakChurn, P.churnEveryS * 1000);
      out({ event: "churning" });
    } else if (cmd.cmd === "calm") {
      if (churnTimer) clearInterval(churnTimer);
      churnTimer = null;
      out({ event: "calm" });
    } else if (cmd.cmd === "report") {
      stopping = true;
      if (churnTimer) clearInterval(churnTimer);
      clearInterval(status);
      const open = sockets.filter((s) => s && s.connected).length;
      out({ event: "report", open, churned: soakChurned, counts: soakCounts, errors,
            clients: soak.map((st) => ({ t: st.t, snap: st.snap, b: st.b, s: st.s,
                                         errors: st.errors, dup: st.dup, dupEx: st.dupEx })) }); // prettier-ignore
    } else if (cmd.cmd === "stop") {
      stopping = true;
      out({ event: "stopped" });
      stopAll(0);
    }
  });
  rl.on("close", () => {
    stopping = true;
    stopAll(0);
  });
}

async function main() {
  if (P.soak) {
    setTimeout(() => {
      log(`deadline of ${P.deadlineS}s reached; exiting`);
      out({ event: "deadline" });
      stopAll(3);
    }, P.deadlineS * 1000).unref();
    return soakMain();
  }
  const hardStop = setTimeout(() => {
    log(`deadline of ${P.deadlineS}s reached; exiting`);
    out({ event: "deadline" });
    stopAll(3);
  }, P.deadlineS * 1000);
  hardStop.unref();

  log(`opening ${P.clients} ${P.transports.join("+")} connections to ${P.urls.join(", ")}`);
  const connectMs = await connectAll();
  out({
    event: "ready",
    clients: P.clients,
    connected: connected - disconnects,
    subscribed,
    failed,
    errors,
    connectMs: Math.round(connectMs),
  });
  log(`ready: ${connected - disconnects} connected, ${failed} failed in ${Math.round(connectMs)} ms`);

  const rl = readline.createInterface({ input: process.stdin });
  let chain = Promise.resolve();
  rl.on("line", (line) => {
    if (!line.trim()) return;
    const cmd = JSON.parse(line);
    chain = chain.then(async () => {
      if (cmd.cmd === "reset") {
        resetStats();
        measuring = true;
        out({ event: "reset" });
      } else if (cmd.cmd === "wait") {
        out(await waitFor(cmd));
      } else if (cmd.cmd === "stop") {
        measuring = false;
        out({ event: "stopped" });
        stopAll(0);
      }
    });
  });
  rl.on("close", () => stopAll(0));
}

main().catch((err) => {
  log(`failed: ${err && err.stack}`);
  process.exit(1);
});
