#!/usr/bin/env node
// Producer for the Node baseline: publishes through @socket.io/redis-emitter, following the
// same command protocol as bench/producer.py (JSON lines on stdin, answers on stdout):
//   {"cmd":"setup",...}                                  nothing to prepare here
//   {"cmd":"rate","rate":R,"durationS":D,"jobs":J,...}  R events/s for D s, event k to job k % J
//   {"cmd":"burst","count":C,"jobs":J,...}              C events as fast as possible
//   {"cmd":"broadcast","id":k}                           one system notification to everyone
//   {"cmd":"stop"}
//
//   node emitter_node.js '{"redisUrl": "redis://127.0.0.1:6379/0"}'
"use strict";

const readline = require("readline");
const { createClient } = require("redis");
const { Emitter } = require("@socket.io/redis-emitter");

const P = JSON.parse(process.argv[2] || "{}");
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const log = (msg) => process.stderr.write(`  [emitter] ${msg}\n`);

// The same wire message as jobcast's job_status_update (notifier.contract.events.status_update).
function message(cmd, k) {
  const jobs = cmd.jobs;
  const n = Math.floor(k / jobs) + 1;
  const sentAt = now();
  const jobId = `${cmd.jobPrefix}${k % jobs}`;
  return [
    jobId,
    {
      type: "job_status_update",
      jobId,
      timestamp: Math.floor(sentAt),
      data: {
        status: "processing",
        progress: n % 100,
        message: `Generating content: section ${(n % 10) + 1} of 10`,
        sentAt,
        n,
      },
      eventId: `${Math.floor(sentAt)}-${k}`,
    },
  ];
}

async function main() {
  const client = createClient({ url: P.redisUrl });
  await client.connect();
  const emitter = new Emitter(client);
  const emit = (cmd, k) => {
    const [jobId, msg] = message(cmd, k);
    emitter.to(`job:${jobId}`).emit("job_status_update", msg);
  };

  async function rate(cmd) {
    const total = Math.round(cmd.rate * cmd.durationS);
    const limitMs = (cmd.durationS * 1.5 + 5) * 1000;
    const t0 = now();
    let sent = 0;
    while (sent < total) {
      const elapsed = now() - t0;
      if (elapsed > limitMs) break;
      const due = Math.min(total, Math.floor((elapsed / 1000) * cmd.rate) + 1);
      while (sent < due) emit(cmd, sent++);
      await sleep(1);
    }
    await client.ping(); // every publish before it has been handled by Redis
    return { sent, t0, t1: now() };
  }

  async function burst(cmd) {
    const t0 = now();
    let sent = 0;
    while (sent < cmd.count) {
      const end = Math.min(cmd.count, sent + 1000);
      while (sent < end) emit(cmd, sent++);
      await client.ping(); // bounded: at most 1,000 publishes in flight
    }
    return { sent, t0, t1: now() };
  }

  const rl = readline.createInterface({ input: process.stdin });
  let chain = Promise.resolve();
  rl.on("line", (line) => {
    if (!line.trim()) return;
    const cmd = JSON.parse(line);
    chain = chain.then(async () => {
      if (cmd.cmd === "setup") {
        out({ event: "done", sent: 0 });
      } else if (cmd.cmd === "rate") {
        out({ event: "done", ...(await rate(cmd)) });
      } else if (cmd.cmd === "burst") {
        out({ event: "done", ...(await burst(cmd)) });
      } else if (cmd.cmd === "broadcast") {
        const sentAt = now();
        emitter.emit("system_notification", {
          type: "system_notification",
          message: `bench broadcast ${cmd.id}`,
          level: "info",
          timestamp: Math.floor(sentAt),
          sentAt,
          eventId: `${Math.floor(sentAt)}-0`,
        });
        await client.ping();
        out({ event: "done", sent: 1, t0: sentAt, t1: now() });
      } else if (cmd.cmd === "stop") {
        await client.quit();
        out({ event: "stopped" });
        process.exit(0);
      }
    }).catch((err) => {
      log(`failed: ${err && err.stack}`);
      out({ event: "error", error: String(err) });
    });
  });
  rl.on("close", () => client.quit().finally(() => process.exit(0)));
  out({ event: "ready" });
}

main().catch((err) => {
  log(`failed: ${err && err.stack}`);
  process.exit(1);
});
