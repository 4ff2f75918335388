// jobcast-client.js: a small browser client for jobcast over socket.io-client.
//
//   import { io } from "/static/vendor/socket.io.esm.min.js"; // or: from "socket.io-client"
//   import { JobcastClient } from "/static/jobcast-client.js";
//
//   const client = new JobcastClient({ io, url: location.origin, token });
//   client.on("job_status_update", (msg) => console.log(msg.data.progress));
//   client.on("job_completed", (msg) => console.log(msg.result));
//   client.connect();
//   await client.subscribe(jobId);
//
// What it does for you (the contract's client-helper duties):
// - adds the routing hint `uid` (the token's `sub`) to every request's query, so a load
//   balancer hashing it keeps all of a user's requests on one notifier (a hint only: the
//   server trusts the token alone);
// - sends the token and the newest eventId seen as Socket.IO `auth` {token, lastEventId},
//   through a function, so every reconnect sends the current values (the server then
//   replays what was missed);
// - drops messages whose eventId it has already delivered (replays, resubscriptions);
// - subscribes again to its unfinished jobs after a reconnect (the snapshot sums up the
//   progress missed meanwhile);
// - acknowledges terminal job events and notifications (`ack` {eventId}), so they are not
//   delivered again on a later connection;
// - reconnects after a network failure or a server restart, but not after a refusal (a bad
//   or expired token: the `state` event says `refused` or `expired`, with the server's code);
// - assembles each job's live output: the snapshot's `data.output`, then each `job_output`
//   chunk at its `data.offset` (counted in code points, as the server counts them: never
//   String.length, which counts UTF-16 units); `client.output(jobId)` is the text so far.
//   An overlapping chunk adds only its new part; after a gap (text missed, e.g. on a
//   connection that did not subscribe) a subscribed job is subscribed again, and its
//   snapshot brings the whole output.

export const SOCKETIO_PATH = "/ws/job-status";

/** Job states that are final: a job in one of them has no more events. */
export const TERMINAL_STATES = new Set(["completed", "failed", "cancelled"]);
/** The message types of the two outcomes (a cancellation is a `job_status_update`). */
const TERMINAL_TYPES = new Set(["job_completed", "job_error"]);
const NOTIFICATION_TYPES = new Set(["system_notification", "maintenance_notification"]);
const TRANSPORTS = {
  auto: ["polling", "websocket"],
  websocket: ["websocket"],
  polling: ["polling"],
};

/** An eventId ("<ms>-<seq>") as two numbers, or null when it is not one. */
export function parseEventId(id) {
  const match = typeof id === "string" ? /^(\d{1,20})-(\d{1,20})$/.exec(id) : null;
  return match ? [BigInt(match[1]), BigInt(match[2])] : null;
}

/** -1, 0 or 1, comparing two eventIds as the server does (two numbers). */
export function compareEventIds(a, b) {
  const [x, y] = [parseEventId(a), parseEventId(b)];
  if (!x || !y) throw new TypeError(`not an eventId: ${x ? b : a}`);
  if (x[0] !== y[0]) return x[0] < y[0] ? -1 : 1;
  if (x[1] !== y[1]) return x[1] < y[1] ? -1 : 1;
  return 0;
}

/** The `sub` claim of a JWT, read without verifying it (the routing hint), or null. */
export function routingHint(token) {
  try {
    const part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")), (c) =>
      c.charCodeAt(0),
    );
    const sub = JSON.parse(new TextDecoder().decode(bytes))?.sub;
    if (Number.isInteger(sub)) return String(sub); // the user id as the server compares it
    return typeof sub === "string" && sub ? sub : null;
  } catch {
    return null;
  }
}

/** The number of Unicode code points of a string (what job_output offsets count). */
export function codePointLength(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

/** True for a job's last message: completed, failed, or a status update saying cancelled. */
export function isTerminal(msg) {
  return TERMINAL_TYPES.has(msg?.type) || TERMINAL_STATES.has(msg?.data?.status);
}

export class JobcastClient {
  /**
   * @param {object} options
   * @param {Function} options.io  socket.io-client's `io` (the ESM build's export, or window.io)
   * @param {string} options.url  the server's origin, e.g. "http://127.0.0.1:8080"
   * @param {string} options.token  a JWT
   * @param {"auto"|"websocket"|"polling"} [options.transport]  "auto": polling, upgraded
   * @param {string} [options.lastEventId]  resume after this event (e.g. kept from a previous page)
   * @param {boolean} [options.ack]  acknowledge terminal events and notifications (default true)
   * @param {string} [options.uid]  the routing hint sent as `uid` (default: the token's `sub`)
   */
  constructor({
    io,
    url,
    token,
    transport = "auto",
    lastEventId = null,
    ack = true,
    uid = undefined,
    reconnectionDelayMax = 5000,
    seenLimit = 5000,
  }) {
    if (typeof io !== "function") throw new TypeError("pass socket.io-client's `io` function");
    if (!TRANSPORTS[transport]) throw new TypeError(`unknown transport ${transport}`);
    this.token = token;
    this.uid = uid ?? routingHint(token);
    this.lastEventId = lastEventId;
    this.recovered = null;
    this.state = "idle";
    this.detail = null;
    this.stats = { received: 0, duplicates: 0, acked: 0, reconnects: 0 };
    this._ack = ack;
    this._seen = new Set();
    this._ended = new Set(); // jobs whose end was delivered: a job ends once
    this._seenLimit = seenLimit;
    this._jobs = new Set(); // unfinished jobs we subscribed to
    this._outputs = new Map(); // jobId -> {text, length}: the live output, length in code points
    this._refetching = new Set(); // jobs subscribed again to fill a gap in their output
    this._handlers = new Map();
    this._closing = false;
    this._expired = false;
    this._connectedOnce = false;
    this.socket = io(url, {
      path: SOCKETIO_PATH,
      transports: TRANSPORTS[transport],
      upgrade: transport !== "polling",
      autoConnect: false,
      // engine.io-client copies `query` into every polling request and the WebSocket URL.
      query: this.uid ? { uid: this.uid } : {},
      reconnectionDelay: 500,
      reconnectionDelayMax,
      // A function: Socket.IO calls it again on every (re)connection attempt.
      auth: (cb) => cb(this._auth()),
    });
    this._wire();
  }

  /** Listen to a message type ("job_status_update", ...), "*" (every message), "state"
   * ({state, detail}) or "transport" ({transport}). Returns a function that stops it. */
  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this._handlers.get(type)?.delete(handler);
  }

  connect() {
    this._closing = false;
    this._expired = false;
    this._setState("connecting");
    this.socket.connect();
    return this;
  }

  close() {
    this._closing = true;
    this.socket.close();
    this._setState("disconnected", { reason: "closed by the client" });
  }

  /** "websocket" or "polling" (null while not connected). */
  get transport() {
    return this.socket.io.engine?.transport?.name ?? null;
  }

  /** The job's live output received so far (from its start, without gaps). */
  output(jobId) {
    return this._outputs.get(jobId)?.text ?? "";
  }

  /** Subscribe to a job; resolves with the server's answer (`subscribed` or `error`). */
  async subscribe(jobId) {
    this._jobs.add(jobId);
    const answer = await this._call("subscribe_job", { jobId });
    if (answer?.type === "error") this._jobs.delete(jobId);
    return answer;
  }

  async unsubscribe(jobId) {
    this._jobs.delete(jobId);
    return this._call("unsubscribe_job", { jobId });
  }

  async subscribeChannel(channel) {
    return this._call("subscribe_channel", { channel });
  }

  /** Replace the token: used on the next reconnection, and sent now as `refresh_token`. */
  async refreshToken(token) {
    this.token = token;
    if (!this.socket.connected) return null;
    return this._call("refresh_token", { token });
  }

  // --- internals

  _auth() {
    const auth = { token: this.token };
    if (this.lastEventId) auth.lastEventId = this.lastEventId;
    return auth;
  }

  async _call(type, payload) {
    if (!this.socket.connected) {
      // Not connected now: the subscription is remembered and sent again on connect.
      return { type: "pending", ...payload };
    }
    try {
      return await this.socket.timeout(10000).emitWithAck(type, payload);
    } catch (err) {
      return { type: "error", code: "no_answer", message: String(err?.message ?? err) };
    }
  }

  _emit(type, value) {
    for (const handler of this._handlers.get(type) ?? []) {
      try {
        handler(value);
      } catch (err) {
        console.error(`jobcast: a ${type} handler failed`, err);
      }
    }
  }

  _setState(state, detail = null) {
    this.state = state;
    this.detail = detail;
    this._emit("state", { state, detail });
  }

  _wire() {
    const socket = this.socket;
    const manager = socket.io;

    manager.on("open", () => {
      const engine = manager.engine;
      this._emit("transport", { transport: engine.transport.name });
      engine.on("upgrade", (transport) => this._emit("transport", { transport: transport.name }));
    });
    manager.on("reconnect_attempt", (attempt) => {
      this._setState("reconnecting", { attempt });
    });

    socket.on("connect", () => {
      if (this._connectedOnce) this.stats.reconnects += 1;
      this._connectedOnce = true;
      this._setState("connected", { transport: this.transport });
      this._emit("transport", { transport: this.transport });
      // Again after a reconnect: each answer brings the job's current state (a snapshot).
      for (const jobId of this._jobs) socket.emit("subscribe_job", { jobId });
    });

    socket.on("connect_error", (err) => {
      const code = err?.data?.code;
      if (code) {
        // Refused by the server (token, connection limit): Socket.IO does not retry.
        const detail = { code, message: err.message };
        this._setState(code === "token_expired" ? "expired" : "refused", detail);
      } else {
        this._setState("reconnecting", { message: err?.message ?? "connection failed" });
      }
    });

    socket.on("disconnect", (reason) => {
      if (this._closing) return;
      if (this._expired) {
        this._setState("expired", { code: "session_expired", message: "Session expired" });
        return;
      }
      if (reason === "io server disconnect") {
        // The server closed this connection (e.g. slow_consumer): come back, replayed.
        this._setState("reconnecting", { reason });
        setTimeout(() => !this._closing && socket.connect(), 1000);
        return;
      }
      this._setState("reconnecting", { reason }); // Socket.IO reconnects by itself
    });

    socket.onAny((type, msg) => this._receive(type, msg));
  }

  _receive(type, msg) {
    if (msg === null || typeof msg !== "object") return;
    // Before de-duplication: a snapshot may carry the id of a chunk already delivered.
    if (typeof msg.jobId === "string") this._assemble(type, msg);
    const eventId = msg.eventId;
    if (typeof eventId === "string") {
      if (this._seen.has(eventId)) {
        this.stats.duplicates += 1;
        return;
      }
      this._remember(eventId);
      const newer =
        !msg.snapshot &&
        parseEventId(eventId) &&
        (!this.lastEventId || compareEventIds(eventId, this.lastEventId) > 0);
      if (newer) this.lastEventId = eventId;
    }
    const terminal = isTerminal(msg);
    if (terminal && this._ack && typeof eventId === "string") {
      this.socket.emit("ack", { eventId });
      this.stats.acked += 1;
    }
    if (terminal && typeof msg.jobId === "string" && !msg.snapshot) {
      // A job ends once: a second end under another id (published again by a worker after
      // a Redis failover lost the first copy) is acknowledged above, and dropped.
      if (this._ended.has(msg.jobId)) {
        this.stats.duplicates += 1;
        return;
      }
      this._ended.add(msg.jobId);
      if (this._ended.size > this._seenLimit) this._ended.delete(this._ended.values().next().value);
    }
    this.stats.received += 1;
    if (type === "connection_established") this.recovered = Boolean(msg.recovered);
    if (type === "session_expired") this._expired = true;
    if (isTerminal(msg) && msg.jobId) this._jobs.delete(msg.jobId);
    if (this._ack && typeof eventId === "string" && !terminal && NOTIFICATION_TYPES.has(type)) {
      this.socket.emit("ack", { eventId });
      this.stats.acked += 1;
    }
    this._emit(type, msg);
    this._emit("*", msg);
  }

  _assemble(type, msg) {
    const data = msg.data;
    if (data === null || typeof data !== "object") return;
    const known = this._outputs.get(msg.jobId) ?? { text: "", length: 0 };
    if (msg.snapshot) {
      this._refetching.delete(msg.jobId);
      if (typeof data.output === "string" && data.outputLength >= known.length) {
        this._outputs.set(msg.jobId, { text: data.output, length: data.outputLength });
      }
      return;
    }
    if (type !== "job_output" || typeof data.text !== "string") return;
    const offset = data.offset;
    if (!Number.isInteger(offset)) return;
    if (offset > known.length) {
      // A gap: the snapshot of a new subscription brings the whole output.
      if (this._jobs.has(msg.jobId) && !this._refetching.has(msg.jobId)) {
        this._refetching.add(msg.jobId);
        this.socket.emit("subscribe_job", { jobId: msg.jobId });
      }
      return;
    }
    const added =
      offset === known.length
        ? data.text
        : Array.from(data.text).slice(known.length - offset).join(""); // code points
    if (!added) return; // all of it was known already
    this._outputs.set(msg.jobId, {
      text: known.text + added,
      length: known.length + codePointLength(added),
    });
  }

  _remember(eventId) {
    this._seen.add(eventId);
    if (this._seen.size > this._seenLimit) {
      this._seen.delete(this._seen.values().next().value); // the oldest
    }
  }
}
