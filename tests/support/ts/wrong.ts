// Mistakes the declarations must catch: tests/unit/test_client_types.py runs tsc on this file
// and requires exactly the error marked on each line (`// @expect TSnnnn`), and no other.
import { JobcastClient, type ServerMessage } from "../../../api/static/jobcast-client.js";

declare const client: JobcastClient;
declare function show(...values: unknown[]): void;

client.on("job_status_update", (msg) => show(msg.data.progres)); // @expect TS2551
client.on("job_status_update", (msg) => show(msg.progress)); // @expect TS2339
client.on("job_completed", (msg) => show(msg.error)); // @expect TS2339
client.on("job_error", (msg) => show(msg.data.exception)); // @expect TS2339
client.on("job_error", (msg) => show(msg.data.code === "timeout")); // @expect TS2367
client.on("channel_message", (msg) => show(msg.chanel)); // @expect TS2551
client.on("maintenance_notification", (msg) => show(msg.startAt)); // @expect TS2551
client.on("connection_established", (msg) => show(msg.userID)); // @expect TS2551
client.on("session_expiring", (msg) => show(msg.expires)); // @expect TS2551
client.on("job_complete", (msg) => show(msg)); // @expect TS2345
client.on("*", (msg) => show(msg.data)); // @expect TS2339
client.on("state", ({ detail }) => show(detail?.cod)); // @expect TS2551
void client.subscribeChannel("op"); // @expect TS2345
client.on("job_output", (msg) => show(msg.data.offset.length)); // @expect TS2339
client.on("job_output", (msg) => show(msg.result)); // @expect TS2339

function handle(msg: ServerMessage): void {
  if (msg.type === "job_error") show(msg.result); // @expect TS2339
  if (msg.type === "error") show(msg.code === "not_found"); // @expect TS2367
  if (msg.type === "job_status_update") show(msg.data.status === "completed"); // @expect TS2367
}
handle({ type: "pong", timestamp: 1, jobId: "x" }); // @expect TS2353
