"""The client helpers deliver a job's end once: a second terminal event of the same job
under another id (what a worker publishes again when a Redis failover lost the first copy,
which a client may already have) is acknowledged and dropped, by the Python client and by
jobcast-client.js alike. A terminal snapshot (the answer to a subscribe) still arrives."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from typing import Any

from notifier.client import JobcastClient
from tests.support.env import REPO, missing_tool

END = {"type": "job_completed", "jobId": "j1", "eventId": "10-0", "result": {}}
AGAIN = {**END, "eventId": "12-0"}  # the same end, published again after a failover
SNAPSHOT = {  # a later subscribe's answer
    "type": "job_status_update",
    "jobId": "j1",
    "eventId": "14-0",
    "snapshot": True,
    "data": {"status": "completed"},
}
OTHER = {**END, "jobId": "j2", "eventId": "13-0"}


def test_the_python_client_delivers_a_jobs_end_once() -> None:
    async def run() -> list[dict[str, Any]]:
        client = JobcastClient("http://127.0.0.1:1", "x.e30.y", ack=False)
        for message in (END, AGAIN, SNAPSHOT, OTHER):
            await client._on_message(message["type"], message)
        return [client._queue.get_nowait() for _ in range(client._queue.qsize())]

    delivered = asyncio.run(run())
    assert [(m["jobId"], m["eventId"], bool(m.get("snapshot"))) for m in delivered] == [
        ("j1", "10-0", False),
        ("j1", "14-0", True),
        ("j2", "13-0", False),
    ]


def test_the_browser_client_delivers_a_jobs_end_once() -> None:
    node = shutil.which("node")
    if node is None:
        missing_tool("node is not on PATH (install Node.js)")
    script = """
import { JobcastClient } from "CLIENT_URL";
let receive = null;
const emitted = [];
const socket = new Proxy(function () {}, {
  get: (target, name) => {
    if (name === "onAny") return (handler) => { receive = handler; };
    if (name === "emit") return (...args) => { emitted.push(args); };
    return socket;
  },
  apply: () => socket,
});
const client = new JobcastClient({ io: () => socket, url: "http://127.0.0.1:1", token: "x" });
const delivered = [];
client.on("*", (msg) => delivered.push([msg.jobId, msg.eventId, Boolean(msg.snapshot)]));
for (const msg of JSON.parse(process.argv[1])) receive(msg.type, msg);
const acked = emitted.filter(([name]) => name === "ack").map(([, ack]) => ack.eventId);
console.log(JSON.stringify({ delivered, acked }));
""".replace("CLIENT_URL", (REPO / "api" / "static" / "jobcast-client.js").as_uri())
    done = subprocess.run(
        [node, "--input-type=module", "-e", script, json.dumps([END, AGAIN, SNAPSHOT, OTHER])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["delivered"] == [
        ["j1", "10-0", False],
        ["j1", "14-0", True],
        ["j2", "13-0", False],
    ]
    # Every end is acknowledged, the dropped one too: the server stops sending it.
    assert result["acked"] == ["10-0", "12-0", "14-0", "13-0"]
