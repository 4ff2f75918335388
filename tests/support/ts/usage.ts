// How an integrator uses jobcast-client.js from TypeScript: must type-check under --strict
// (tests/unit/test_client_types.py runs tsc on it; nothing is emitted or run).
import { io } from "socket.io-client";

import {
  codePointLength,
  compareEventIds,
  isTerminal,
  JobcastClient,
  parseEventId,
  SOCKETIO_PATH,
  TERMINAL_STATES,
  type AnswerMap,
  type ClientMessage,
  type JobErrorCode,
  type ServerMessage,
  type TerminalMessage,
  type TruncatedResult,
} from "../../../api/static/jobcast-client.js";

// Extra fields a task passes to report(50, "Writing", section=3).
declare module "../../../api/static/jobcast-client.js" {
  interface JobStatusData {
    section?: number;
  }
}

declare const token: string;
declare function show(...values: unknown[]): void;

// socket.io-client's own `io` fits, and `client.socket` keeps socket.io-client's type.
const client = new JobcastClient({ io, url: "http://127.0.0.1:8080", token, transport: "auto" });
const socketId: string | undefined = client.socket.id;
const path: "/ws/job-status" = SOCKETIO_PATH;
show(socketId, path, client.transport, client.stats.duplicates, client.recovered);

// The client of the README/docs, as written there.
client.on("state", ({ state, detail }) => show(state, detail?.code ?? ""));
client.on("job_status_update", (msg) => show(msg.data.progress, msg.data.section));
client.on("job_completed", (msg) => show(msg.result));
const stop: () => void = client.on("transport", ({ transport }) => show(transport));
stop();

client.on("state", (event) => {
  switch (event.state) {
    case "refused":
      show(event.detail.code, event.detail.message); // "auth_required" | "invalid_token" | ...
      break;
    case "expired":
      show(event.detail.code === "token_expired" ? "login again" : event.detail.message);
      break;
    case "connected":
      show(event.detail.transport);
      break;
    case "reconnecting":
      show(event.detail.attempt ?? event.detail.reason ?? event.detail.message);
      break;
    case "disconnected":
      show(event.detail.reason);
      break;
    case "idle":
    case "connecting": {
      const none: null = event.detail;
      show(none);
      break;
    }
  }
});

function percent(value: number | undefined): string {
  return `${Math.round(value ?? 0)}%`;
}

/** Every server message, narrowed on `type`; the `never` default proves the cases are all. */
function handle(msg: ServerMessage): string {
  switch (msg.type) {
    case "connection_established":
      return `${String(msg.userId)} ${msg.username ?? "?"} recovered=${msg.recovered}`;
    case "job_status_update": {
      const { status, progress, message, etaSeconds, attempt, retryInSeconds } = msg.data;
      const tag = msg.snapshot ? "snapshot " : "";
      if (status === "retrying") return `${tag}retry ${attempt ?? 0} in ${retryInSeconds ?? 0}s`;
      return `${tag}${msg.jobId} ${status} ${percent(progress)} ${message ?? ""} eta=${etaSeconds}`;
    }
    case "job_completed": {
      const result = msg.result;
      if (typeof result === "object" && result !== null && !Array.isArray(result)) {
        if (result["truncated"] === true) {
          const marker = result as unknown as TruncatedResult;
          return `${msg.jobId} done (${marker.bytes} bytes, ${marker.preview})`;
        }
      }
      return `${msg.jobId} done at ${msg.timestamp}: ${JSON.stringify(result)}`;
    }
    case "job_error": {
      const code: JobErrorCode = msg.data.code;
      const lost = code === "worker_lost" ? " (worker lost)" : "";
      return `${msg.jobId} failed: ${msg.error} ${msg.data.exceptionType ?? ""}${lost}`;
    }
    case "job_output":
      return `${msg.jobId} +${codePointLength(msg.data.text)} at ${msg.data.offset}`;
    case "system_notification":
      return `[${msg.level}] ${msg.message} ${msg.eventId}`;
    case "maintenance_notification":
      return `${msg.message} at ${msg.startsAt ?? "?"} for ${msg.durationMinutes ?? "?"} min`;
    case "channel_message":
      return `#${msg.channel} [${msg.level}] ${msg.message} ${JSON.stringify(msg.data)}`;
    case "session_expiring":
      return `expires at ${msg.expiresAt}: ${msg.message}`;
    case "session_expired":
      return `expired at ${msg.timestamp}: ${msg.message}`;
    case "token_refreshed":
      return `token good until ${msg.expiresAt ?? "forever"}`;
    case "subscribed":
      return "jobId" in msg ? `watching ${msg.jobId}` : `joined ${msg.channel}`;
    case "unsubscribed":
      return "jobId" in msg ? `left job ${msg.jobId}` : `left ${msg.channel}`;
    case "pong":
      return `pong ${msg.timestamp}`;
    case "error":
      return `${msg.code} ${msg.message} (${msg.request ?? "-"})`;
    default: {
      const unhandled: never = msg;
      return unhandled;
    }
  }
}

client.on("*", (msg) => {
  show(handle(msg));
  if (isTerminal(msg) && "jobId" in msg) show("finished", msg.jobId);
});
client.on("channel_message", (msg) => {
  if (msg.channel === "ops" && msg.level === "critical") show(msg.data["host"]);
});
client.on("job_error", (msg) => show(msg.data.code, msg.snapshot === true));
client.on("job_output", (msg) => {
  const end: number = msg.data.offset + codePointLength(msg.data.text);
  show(end, client.output(msg.jobId));
});
client.on("job_status_update", (msg) => {
  if (msg.snapshot) show(msg.data.output ?? "", msg.data.outputLength, msg.data.outputTruncated);
});
client.on("job_completed", (msg) => show(msg.data?.output, msg.data?.outputLength));

async function main(jobId: string): Promise<void> {
  client.connect().on("session_expiring", () => void client.refreshToken(token));
  const answer = await client.subscribe(jobId);
  switch (answer.type) {
    case "subscribed":
      show("subscribed", answer.jobId);
      break;
    case "pending":
      show("sent on connect", answer.jobId);
      break;
    case "error":
      show(answer.code === "no_answer" || answer.code === "job_not_found", answer.message);
      break;
  }
  const channel = await client.subscribeChannel("ops");
  if (channel.type === "error" && channel.code === "forbidden") show("not an admin");
  const refreshed = await client.refreshToken(token);
  if (refreshed?.type === "token_refreshed") show(refreshed.expiresAt);
  await client.unsubscribe(jobId);
  client.close();
}
void main("job-123");

// The helpers.
const order: -1 | 0 | 1 = compareEventIds("1640995200000-0", "1640995200000-1");
const parts: [bigint, bigint] | null = parseEventId("1640995200000-0");
declare const jobState: string; // e.g. REST's job.state
const final: boolean = TERMINAL_STATES.has(jobState);
show(order, parts, final);

// Raw Socket.IO or native WebSocket users: the messages both ways.
const outgoing: ClientMessage[] = [
  { type: "subscribe_job", jobId: "job-123" },
  { type: "subscribe_channel", channel: "maintenance" },
  { type: "ack", eventId: "1640995200000-0" },
  { type: "refresh_token", token },
  { type: "ping" },
];
declare const ws: WebSocket;
for (const msg of outgoing) ws.send(JSON.stringify(msg));
ws.onmessage = (event: MessageEvent<string>) => {
  show(handle(JSON.parse(event.data) as ServerMessage));
};
const answer: AnswerMap["subscribe_job"] = { type: "subscribed", jobId: "job-123" };
const cancelled: TerminalMessage = {
  type: "job_status_update",
  jobId: "job-123",
  eventId: "1640995200000-0",
  timestamp: 1640995200000,
  data: { status: "cancelled", message: "Cancelled by its owner" },
};
show(answer, cancelled);
