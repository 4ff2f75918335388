// jobcast-client.d.ts: TypeScript declarations for jobcast-client.js and for the messages
// of both endpoints (Socket.IO /ws/job-status and the native /ws/job-status-native).
//
// The wire shapes are those built by notifier/contract/events.py (job and notification
// events), notifier/edge/commands.py (answers and errors) and notifier/core/sessions.py
// (session_expiring, session_expired); docs/messages.md describes them. Server messages
// are a union discriminated on `type`:
//
//   client.on("*", (msg) => {
//     if (msg.type === "job_status_update") console.log(msg.data.progress);
//   });
//
// Extra fields a task passes to report() land in `data` of its job_status_update; declare
// them by augmenting JobStatusData (the module name is the one your code imports):
//
//   declare module "./jobcast-client.js" {
//     interface JobStatusData { section?: number }
//   }
//
// Self-contained: no import from socket.io-client (any `io` with the shape below fits,
// socket.io-client's included; `client.socket` then has socket.io-client's Socket type).

// --- vocabulary

/** An eventId, the Redis stream id `"<ms>-<seq>"` (compare with compareEventIds). */
export type EventId = string;
/** Epoch milliseconds. */
export type Timestamp = number;

/** `job_status_update.data.status`. */
export type JobStatus = "queued" | "started" | "processing" | "retrying" | "cancelled";
/** A job's final states (`cancelled` arrives as a job_status_update, the others as
 * job_completed and job_error). */
export type TerminalState = "completed" | "failed" | "cancelled";
/** `job_error.data.code`. */
export type JobErrorCode = "task_failed" | "worker_lost" | "time_limit" | "rejected";
/** `level` of system notifications and channel messages. */
export type Level = "info" | "warning" | "error" | "critical";
/** The channels a connection may subscribe to (`ops`: ADMIN only). */
export type Channel = "notifications" | "maintenance" | "ops";
/** `code` of an `error` message the server sends. */
export type ErrorCode =
  | "bad_request"
  | "forbidden"
  | "job_not_found"
  | "channel_not_found"
  | "rate_limited"
  | "too_many_subscriptions"
  | "message_too_large"
  | "invalid_token"
  | "internal_error";
/** `data.code` of a refused Socket.IO connection (`connect_error`). */
export type RefusalCode =
  | "auth_required"
  | "invalid_token"
  | "token_expired"
  | "too_many_connections";
/** A JSON value (results and channel data are whatever the producer sent). */
export type JsonValue =
  | string
  | number
  | boolean
  | null
  | JsonValue[]
  | { [key: string]: JsonValue };

// --- server to client

/** The first message of every connection. */
export interface ConnectionEstablished {
  type: "connection_established";
  /** The token's `sub`, a number when it is one there. */
  userId: string | number;
  /** The token's `username` or `email` claim, null without either. */
  username: string | null;
  timestamp: Timestamp;
  message: string;
  /** True only when `lastEventId` was sent and everything after it was replayed. */
  recovered: boolean;
}

/** `job_status_update.data`. An interface: augment it with the extra fields of report(). */
export interface JobStatusData {
  status: JobStatus;
  /** 0-100. */
  progress?: number;
  message?: string;
  /** Remaining seconds, once the job has reported progress twice (absent or 0 at 100). */
  etaSeconds?: number;
  /** `retrying`: the retry's number (1 for the first retry). */
  attempt?: number;
  /** `retrying`: seconds until the retry runs. */
  retryInSeconds?: number;
}

/** The live output a snapshot (the answer to subscribe_job) carries in `data`: all of it
 * up to the snapshot's eventId; the job_output chunks after it start at `outputLength`. */
export interface OutputSnapshot {
  /** The job's output so far (workers.progress.stream). */
  output: string;
  /** Its length in Unicode code points (not UTF-16 units: not `output.length`). */
  outputLength: number;
  /** Present once text was dropped past JOBCAST_OUTPUT_MAX_BYTES. */
  outputTruncated?: true;
}

/** Progress and state changes of a job (a `cancelled` one is its last message). */
export interface JobStatusUpdate {
  type: "job_status_update";
  jobId: string;
  eventId: EventId;
  timestamp: Timestamp;
  /** As a snapshot, it also holds the OutputSnapshot fields. */
  data: JobStatusData & Partial<OutputSnapshot>;
  /** The answer to subscribe_job: the job's current state (does not move lastEventId). */
  snapshot?: true;
}

/** `job_output.data`: a chunk of the job's live output. */
export interface JobOutputData {
  /** The code points of output before this chunk (where it goes). */
  offset: number;
  /** The chunk (several stream() calls may arrive joined in one). */
  text: string;
}

/** A chunk of a job's live output, to its subscribers and its owner's connections;
 * chunks are never dropped or reordered, and the job's outcome follows the last one. */
export interface JobOutput {
  type: "job_output";
  jobId: string;
  eventId: EventId;
  timestamp: Timestamp;
  data: JobOutputData;
}

/** What `result` holds instead of a result whose JSON is over JOBCAST_RESULT_MAX_BYTES. */
export interface TruncatedResult {
  truncated: true;
  /** The size of the full result's JSON. */
  bytes: number;
  limit: number;
  /** The start of the result's JSON. */
  preview: string;
  /** The Celery task id, when its result backend keeps the full result. */
  taskId?: string;
}

/** A job's success: its last message. */
export interface JobCompleted {
  type: "job_completed";
  jobId: string;
  eventId: EventId;
  timestamp: Timestamp;
  /** The task's return value (JSON), or a TruncatedResult marker. */
  result: JsonValue;
  /** Only as a snapshot: the job's live output. */
  data?: OutputSnapshot;
  /** Sent as the answer to subscribe_job of a finished job. */
  snapshot?: true;
}

export interface JobErrorData {
  code: JobErrorCode;
  /** The exception's class name, when there was one. */
  exceptionType?: string;
}

/** A job's failure: its last message (ops channel subscribers get every user's). */
export interface JobError {
  type: "job_error";
  jobId: string;
  eventId: EventId;
  timestamp: Timestamp;
  error: string;
  /** As a snapshot, it also holds the OutputSnapshot fields. */
  data: JobErrorData & Partial<OutputSnapshot>;
  /** Sent as the answer to subscribe_job of a failed job. */
  snapshot?: true;
}

/** To every connection. */
export interface SystemNotification {
  type: "system_notification";
  eventId: EventId;
  message: string;
  level: Level;
  timestamp: Timestamp;
}

/** To every connection. */
export interface MaintenanceNotification {
  type: "maintenance_notification";
  eventId: EventId;
  message: string;
  /** When the maintenance starts (epoch ms). */
  startsAt?: Timestamp;
  durationMinutes?: number;
  timestamp: Timestamp;
}

/** To the subscribers of a channel (workers.notify, POST .../broadcast/channel/{name}). */
export interface ChannelMessage {
  type: "channel_message";
  channel: Channel;
  message: string;
  level: Level;
  /** The producer's extra fields. */
  data: { [key: string]: JsonValue };
  eventId: EventId;
  timestamp: Timestamp;
}

/** JOBCAST_SESSION_WARNING_SECONDS before the token expires: send refresh_token. */
export interface SessionExpiring {
  type: "session_expiring";
  /** When the token expires (epoch ms). */
  expiresAt: Timestamp;
  timestamp: Timestamp;
  message: string;
}

/** The token expired: the server closes the connection after this message. */
export interface SessionExpired {
  type: "session_expired";
  timestamp: Timestamp;
  message: string;
}

/** The answer to refresh_token. */
export interface TokenRefreshed {
  type: "token_refreshed";
  /** When the new token expires (epoch ms); null for a token without `exp`. */
  expiresAt: Timestamp | null;
}

/** The answer to subscribe_job. */
export interface SubscribedJob {
  type: "subscribed";
  jobId: string;
}

/** The answer to subscribe_channel. */
export interface SubscribedChannel {
  type: "subscribed";
  channel: Channel;
}

export type Subscribed = SubscribedJob | SubscribedChannel;

/** The answer to unsubscribe_job. */
export interface UnsubscribedJob {
  type: "unsubscribed";
  jobId: string;
}

/** The answer to unsubscribe_channel (the channel as sent, known or not). */
export interface UnsubscribedChannel {
  type: "unsubscribed";
  channel: string;
}

export type Unsubscribed = UnsubscribedJob | UnsubscribedChannel;

/** The answer to ping. */
export interface Pong {
  type: "pong";
  timestamp: Timestamp;
}

/** A client message was refused; the connection stays open (unless flooding or oversized). */
export interface ErrorMessage {
  type: "error";
  code: ErrorCode;
  message: string;
  /** The type of the message that was refused, when it had one. */
  request?: string;
}

/** Every message the server sends, by type. */
export interface ServerMessageMap {
  connection_established: ConnectionEstablished;
  job_status_update: JobStatusUpdate;
  job_completed: JobCompleted;
  job_error: JobError;
  job_output: JobOutput;
  system_notification: SystemNotification;
  maintenance_notification: MaintenanceNotification;
  channel_message: ChannelMessage;
  session_expiring: SessionExpiring;
  session_expired: SessionExpired;
  token_refreshed: TokenRefreshed;
  subscribed: Subscribed;
  unsubscribed: Unsubscribed;
  pong: Pong;
  error: ErrorMessage;
}

export type ServerMessageType = keyof ServerMessageMap;
/** Every message the server sends: narrow on `type`. */
export type ServerMessage = ServerMessageMap[ServerMessageType];
/** A job's last message (what isTerminal() is true for). */
export type TerminalMessage =
  | JobCompleted
  | JobError
  | (JobStatusUpdate & { data: { status: "cancelled" } });

// --- client to server (on Socket.IO the event name is `type` and the payload the rest)

export interface SubscribeJob {
  type: "subscribe_job";
  jobId: string;
}

export interface UnsubscribeJob {
  type: "unsubscribe_job";
  jobId: string;
}

export interface SubscribeChannel {
  type: "subscribe_channel";
  channel: Channel;
}

export interface UnsubscribeChannel {
  type: "unsubscribe_channel";
  channel: Channel;
}

export interface Ping {
  type: "ping";
}

/** No answer: the user has everything up to this event (it is not delivered again). */
export interface Ack {
  type: "ack";
  eventId: EventId;
}

export interface RefreshToken {
  type: "refresh_token";
  token: string;
}

/** Every message a client may send, by type. */
export interface ClientMessageMap {
  subscribe_job: SubscribeJob;
  unsubscribe_job: UnsubscribeJob;
  subscribe_channel: SubscribeChannel;
  unsubscribe_channel: UnsubscribeChannel;
  ping: Ping;
  ack: Ack;
  refresh_token: RefreshToken;
}

export type ClientMessageType = keyof ClientMessageMap;
export type ClientMessage = ClientMessageMap[ClientMessageType];

/** What the server answers each client message with (`ack` has no answer). */
export interface AnswerMap {
  subscribe_job: SubscribedJob | ErrorMessage;
  unsubscribe_job: UnsubscribedJob | ErrorMessage;
  subscribe_channel: SubscribedChannel | ErrorMessage;
  unsubscribe_channel: UnsubscribedChannel | ErrorMessage;
  ping: Pong | ErrorMessage;
  ack: ErrorMessage | undefined;
  refresh_token: TokenRefreshed | ErrorMessage;
}

// --- JobcastClient

export declare const SOCKETIO_PATH: "/ws/job-status";
/** Job states that are final (the TerminalState values): a job in one of them has no more
 * events. A set of strings, so that `TERMINAL_STATES.has(job.state)` takes any state. */
export declare const TERMINAL_STATES: ReadonlySet<string>;

/** An eventId ("<ms>-<seq>") as two numbers, or null when it is not one. */
export declare function parseEventId(id: unknown): [bigint, bigint] | null;
/** -1, 0 or 1, comparing two eventIds as the server does; throws TypeError on a non-eventId. */
export declare function compareEventIds(a: EventId, b: EventId): -1 | 0 | 1;
/** The `sub` claim of a JWT, read without verifying it (the routing hint `uid`), or null. */
export declare function routingHint(token: string): string | null;
/** True for a job's last message: completed, failed, or a status update saying cancelled. */
export declare function isTerminal(msg: unknown): boolean;
/** The number of Unicode code points of a string (what job_output offsets count). */
export declare function codePointLength(text: string): number;

export type Transport = "websocket" | "polling";
/** `auto`: long-polling first, upgraded to WebSocket where it can be. */
export type TransportOption = "auto" | Transport;

/** What the client sends as Socket.IO `auth` on every (re)connection attempt. */
export interface AuthPayload {
  token: string;
  lastEventId?: EventId;
}

/** The options JobcastClient passes to `io(url, options)`. */
export interface IoOptions {
  path: string;
  transports: Transport[];
  upgrade: boolean;
  autoConnect: false;
  /** `{uid}`, the routing hint, in every polling request and the WebSocket URL. */
  query: { uid?: string };
  reconnectionDelay: number;
  reconnectionDelayMax: number;
  auth: (cb: (auth: AuthPayload) => void) => void;
}

/** What JobcastClient needs of the socket `io` returns (socket.io-client's Socket fits). */
export interface JobcastSocket {
  readonly connected: boolean;
  connect(): unknown;
  close(): unknown;
  emit(event: string, ...args: unknown[]): unknown;
}

export interface JobcastClientOptions<S extends JobcastSocket = JobcastSocket> {
  /** socket.io-client's `io` (the ESM build's export, or window.io). */
  io: (url: string, options: IoOptions) => S;
  /** The server's origin, e.g. "http://127.0.0.1:8080". */
  url: string;
  /** A JWT. */
  token: string;
  /** Default "auto". */
  transport?: TransportOption;
  /** Resume after this event (e.g. kept from a previous page). Default null. */
  lastEventId?: EventId | null;
  /** Acknowledge terminal events and notifications. Default true. */
  ack?: boolean;
  /** The routing hint sent as the query parameter `uid` (a load balancer hashes it).
   * Default: the token's `sub`. */
  uid?: string;
  /** The longest wait between reconnection attempts, ms. Default 5000. */
  reconnectionDelayMax?: number;
  /** How many eventIds are remembered to drop duplicates. Default 5000. */
  seenLimit?: number;
}

export type ClientState =
  | "idle"
  | "connecting"
  | "connected"
  | "reconnecting"
  | "disconnected"
  | "refused"
  | "expired";

/** The union of every state's detail fields, so `detail?.code` reads on any state. */
export interface StateDetailFields {
  code?: RefusalCode | "session_expired";
  message?: string;
  reason?: string;
  attempt?: number;
  transport?: Transport | null;
}

export interface ConnectedDetail extends StateDetailFields {
  transport: Transport | null;
}

/** One of: `attempt` (Socket.IO's retry count), `message` (a failed attempt) or `reason`
 * (why the connection dropped). */
export interface ReconnectingDetail extends StateDetailFields {}

export interface DisconnectedDetail extends StateDetailFields {
  reason: string;
}

export interface RefusedDetail extends StateDetailFields {
  code: Exclude<RefusalCode, "token_expired">;
  message: string;
}

export interface ExpiredDetail extends StateDetailFields {
  code: "token_expired" | "session_expired";
  message: string;
}

/** The `state` event: narrow on `state` for its detail. */
export type StateEvent =
  | { state: "idle"; detail: null }
  | { state: "connecting"; detail: null }
  | { state: "connected"; detail: ConnectedDetail }
  | { state: "reconnecting"; detail: ReconnectingDetail }
  | { state: "disconnected"; detail: DisconnectedDetail }
  | { state: "refused"; detail: RefusedDetail }
  | { state: "expired"; detail: ExpiredDetail };

export type StateDetail = StateEvent["detail"];

/** The `transport` event: on open and on an upgrade to WebSocket. */
export interface TransportEvent {
  transport: Transport | null;
}

/** What `on(type, handler)` hands each handler. */
export interface ClientEventMap extends ServerMessageMap {
  /** Every server message. */
  "*": ServerMessage;
  state: StateEvent;
  transport: TransportEvent;
}

export type ClientEventType = keyof ClientEventMap;

export interface ClientStats {
  received: number;
  duplicates: number;
  acked: number;
  reconnects: number;
}

/** What a call answers while the client is not connected: remembered, sent on connect. */
export interface PendingJob {
  type: "pending";
  jobId: string;
}

export interface PendingChannel {
  type: "pending";
  channel: Channel;
}

/** No answer within 10 s (made by the client, not sent by the server). */
export interface NoAnswer {
  type: "error";
  code: "no_answer";
  message: string;
}

export declare class JobcastClient<S extends JobcastSocket = JobcastSocket> {
  constructor(options: JobcastClientOptions<S>);

  /** The token sent on the next (re)connection. */
  token: string;
  /** The routing hint `uid` sent on every request (null: none). */
  readonly uid: string | null;
  /** The newest eventId delivered (snapshots aside): sent as `auth.lastEventId`. */
  lastEventId: EventId | null;
  /** `connection_established.recovered` of the latest connection (null before one). */
  recovered: boolean | null;
  state: ClientState;
  detail: StateDetail;
  readonly stats: ClientStats;
  /** What `io` returned. */
  readonly socket: S;
  /** "websocket" or "polling" (null while not connected). */
  readonly transport: Transport | null;

  /** Listen to a message type, "*" (every message), "state" or "transport".
   * Returns a function that stops it. */
  on<K extends ClientEventType>(type: K, handler: (value: ClientEventMap[K]) => void): () => void;
  connect(): this;
  close(): void;
  /** The job's live output received so far: the snapshot's `data.output`, then the
   * job_output chunks placed by offset (from its start, without gaps; "" before any). */
  output(jobId: string): string;
  /** Subscribe to a job (remembered: sent again after every reconnect); resolves with the
   * server's answer. */
  subscribe(jobId: string): Promise<SubscribedJob | ErrorMessage | NoAnswer | PendingJob>;
  unsubscribe(jobId: string): Promise<UnsubscribedJob | ErrorMessage | NoAnswer | PendingJob>;
  subscribeChannel(
    channel: Channel,
  ): Promise<SubscribedChannel | ErrorMessage | NoAnswer | PendingChannel>;
  /** Replace the token: used on the next reconnection, and sent now as `refresh_token`
   * (null when not connected). */
  refreshToken(token: string): Promise<TokenRefreshed | ErrorMessage | NoAnswer | null>;
}
