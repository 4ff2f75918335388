#!/usr/bin/env node
// Baseline (b): what a team would pick instead of jobcast — a socket.io 4 server with
// @socket.io/redis-adapter, fed by @socket.io/redis-emitter (bench/emitter_node.js).
// Same auth (HS256 JWT in `auth.token`, sub = user id), same rooms (user:<sub> on connect,
// job:<jobId> on `subscribe_job`, answered with `subscribed`), same path.
//
//   node baseline_node.js '{"port": 8081, "redisUrl": "redis://127.0.0.1:6379/0", "secret": "..."}'
"use strict";

const crypto = require("crypto");
const http = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const P = JSON.parse(process.argv[2] || "{}");
const PATH = P.path || "/ws/job-status";

function verify(token, secret) {
  if (typeof token !== "string") throw new Error("auth_required");
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("invalid_token");
  const header = JSON.parse(Buffer.from(parts[0], "base64url").toString());
  if (header.alg !== "HS256") throw new Error("invalid_token");
  const expected = crypto.createHmac("sha256", secret).update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], "base64url");
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
    throw new Error("invalid_token");
  }
  const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString());
  if (typeof claims.exp !== "number" || claims.exp * 1000 < Date.now()) {
    throw new Error("token_expired");
  }
  if (claims.sub === undefined || claims.sub === "") throw new Error("invalid_token");
  return claims;
}

async function main() {
  const pub = createClient({ url: P.redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);

  const httpServer = http.createServer((req, res) => {
    res.writeHead(req.url === "/healthz" ? 200 : 404, { "content-type": "text/plain" });
    res.end(req.url === "/healthz" ? "ok" : "not found");
  });
  const io = new Server(httpServer, {
    path: PATH,
    adapter: createAdapter(pub, sub),
    cors: { origin: true },
  });

  io.use((socket, next) => {
    try {
      socket.data.user = String(verify(socket.handshake.auth && socket.handshake.auth.token, P.secret).sub);
      next();
    } catch (err) {
      const e = new Error(`Authentication failed: ${err.message}`);
      e.data = { code: err.message };
      next(e);
    }
  });

  io.on("connection", (socket) => {
    socket.join(`user:${socket.data.user}`);
    socket.on("subscribe_job", (msg, ack) => {
      const jobId = msg && msg.jobId;
      if (typeof jobId !== "string" || !jobId) {
        socket.emit("error", { type: "error", code: "bad_request", message: "jobId is required" });
        return;
      }
      socket.join(`job:${jobId}`);
      const answer = { type: "subscribed", jobId };
      socket.emit("subscribed", answer);
      if (typeof ack === "function") ack(answer);
    });
  });

  httpServer.listen(P.port, P.host || "127.0.0.1", () => {
    process.stderr.write(`baseline_node listening on ${P.host || "127.0.0.1"}:${P.port}\n`);
  });
  const stop = () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  process.stderr.write(`baseline_node failed: ${err && err.stack}\n`);
  process.exit(1);
});
