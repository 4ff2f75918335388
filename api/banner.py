"""What the launcher prints once the stack is ready: URLs, demo tokens, a snippet to try.

The tokens (one for user 1, one for an ADMIN, valid 8 h) are signed with the secret every
child was given; the snippet starts a job with curl and follows it from Python or Node.js.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from api.cli import TokenError, dev_token
from api.supervise import http_base, say
from notifier.contract.settings import Settings
from notifier.observability.logs import scrub

TOKEN_TTL_SECONDS = 8 * 3600


def announce(
    settings: Settings,
    run_dir: Path,
    secret: str,
    generated_flower_auth: str | None,
    notifier_ports: Sequence[int] = (),
) -> None:
    s = settings
    base = http_base(s.http_host, s.http_port)
    flower_base = http_base("127.0.0.1", s.flower_port)
    if generated_flower_auth:
        user, _, password = generated_flower_auth.partition(":")
        flower_note = (
            f"user {user}, password {password} (generated for this session; "
            "set JOBCAST_FLOWER_BASIC_AUTH=user:password to choose)"
        )
    else:
        flower_note = "basic auth from JOBCAST_FLOWER_BASIC_AUTH"
    print("", flush=True)
    print("jobcast is running. Ctrl-C stops everything.", flush=True)
    print(f"  demo:   {base}/  (pick a demo user, start jobs, watch them live)", flush=True)
    print(f"  docs:   {base}/docs", flush=True)
    print(f"  flower: {flower_base}  {flower_note}", flush=True)
    print(f"  redis:  {scrub(s.redis_url)}", flush=True)
    if s.redis_cluster:
        nodes = ",".join(map(str, s.cluster_ports))
        print(f"  nodes:  127.0.0.1:{{{nodes}}} (Redis Cluster: 3 masters, 3 replicas)", flush=True)
    print(f"  broker: {scrub(s.broker_url())}  (Celery)", flush=True)
    print(f"  result: {scrub(s.result_backend())}  (Celery's result backend)", flush=True)
    servers = ["api"]
    if notifier_ports:
        servers = [f"notifier-{n}" for n in range(1, len(notifier_ports) + 1)] + ["haproxy"]
        listed = ", ".join(
            f"notifier-{n} 127.0.0.1:{port}" for n, port in enumerate(notifier_ports, 1)
        )
        print(f"  behind: HAProxy on :{s.http_port} (by partition): {listed}", flush=True)
    print(f"  logs:   {run_dir}/{{worker,{','.join(servers)},flower}}.log", flush=True)
    try:
        token = dev_token(s, 1, username="demo-user", ttl_seconds=TOKEN_TTL_SECONDS, secret=secret)
        admin = dev_token(
            s,
            "admin",
            username="demo-admin",
            roles=["ADMIN"],
            ttl_seconds=TOKEN_TTL_SECONDS,
            secret=secret,
        )
    except TokenError as exc:
        say(f"no demo tokens: {exc}")
        return
    hours = TOKEN_TTL_SECONDS // 3600
    print(f"\nA token for user 1 and one for an ADMIN, valid {hours} h:", flush=True)
    print(f"token: {token}", flush=True)
    print(f"admin-token: {admin}", flush=True)
    print(SNIPPET.replace("@BASE@", base).replace("@TOKEN@", token), flush=True)


SNIPPET = """
Start a job (shell):

export TOKEN='@TOKEN@'
export JOB_ID=$(curl -sS -X POST @BASE@/api/v1/jobs \\
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
  -d '{"topic": "Redis Streams", "sections": 5}' \\
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["jobId"])')

Watch it from Python (pip install "python-socketio[client]"; save as watch.py, run
python3 watch.py in the same shell):

import os, threading, socketio
job, done, sio = os.environ["JOB_ID"], threading.Event(), socketio.Client()
def show(m):
    if m.get("jobId") == job:
        print(m["type"], m.get("result") or m.get("error") or m["data"])
        if m["type"] != "job_status_update": done.set()
for name in ("job_status_update", "job_completed", "job_error"): sio.on(name, show)
sio.connect("@BASE@", socketio_path="/ws/job-status", auth={"token": os.environ["TOKEN"]})
sio.emit("subscribe_job", {"jobId": job}); done.wait(); sio.disconnect()

Or from Node (npm install socket.io-client; save as watch.js, run node watch.js):

const { io } = require("socket.io-client");
const job = process.env.JOB_ID;
const socket = io("@BASE@", { path: "/ws/job-status", auth: { token: process.env.TOKEN } });
socket.on("connect", () => socket.emit("subscribe_job", { jobId: job }));
socket.on("connect_error", (err) => console.error("refused:", err.message, err.data));
socket.on("job_status_update", (m) => m.jobId === job && console.log(m.data));
for (const type of ["job_completed", "job_error"]) socket.on(type, (m) => {
  if (m.jobId === job) { console.log(type, m.result ?? m.error); socket.close(); }
});
"""
