"""The demo page in a real headless Chromium (Debian's, driven by playwright-core from npm),
against the real stack: a ``JOBCAST_DEMO=1`` server, the Celery worker and Redis.

Every wait is bounded (the driver's Playwright timeouts, and :data:`COMMAND_TIMEOUT` per
command); no test asserts on timings.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from notifier.contract.events import TERMINAL_TYPES
from tests.support.browser_helpers import (
    ARTIFACTS,
    NODE_MODULES,
    Browser,
    DemoServer,
    Page,
    png_stats,
    running_demo_server,
)
from tests.support.env import REPO, missing_tool
from tests.support.helpers import Tokens, bearer
from tests.support.keyspace import job_partition
from tests.support.processes import Server
from tests.support.waiting import wait_until
from workers.tasks import content_text

pytestmark = pytest.mark.integration

#: Milliseconds the page may take for a job of a few seconds to finish.
JOB_WAIT_MS = 40000


@pytest.fixture
def page(browser: Browser) -> Page:
    """A new browser context (no cookies, no storage) with one page, for each test."""
    page = Page(browser)
    page.newPage(width=1200, height=900)
    return page


# --- page steps


def open_page(page: Page, base_url: str, transport: str | None = None) -> None:
    query = f"?transport={transport}" if transport else ""
    page.goto(url=f"{base_url}/{query}")
    page.waitFor(selector="body[data-ready='true']")


def sign_in(page: Page, user: str) -> None:
    page.click(selector=f"#users button[data-user='{user}']")
    page.wait_js("document.querySelector('#connection').dataset.state === 'connected'")


def start_job_in_page(
    page: Page, topic: str, sections: int, seconds: float, fail_at: int = 0
) -> str:
    before = page.js("document.querySelectorAll('#jobs .job').length")
    page.fill(selector="#topic", value=topic)
    page.fill(selector="#sections", value=str(sections))
    page.fill(selector="#seconds", value=str(seconds))
    page.fill(selector="#fail-at", value=str(fail_at) if fail_at else "")
    page.click(selector="#start-job")
    page.wait_js(f"document.querySelectorAll('#jobs .job').length > {before}")
    return str(page.js("document.querySelector('#jobs .job').dataset.jobId"))


def card(job_id: str) -> str:
    return f"document.querySelector('[data-job-id=\"{job_id}\"]')"


def wait_status(page: Page, job_id: str, status: str, timeout_ms: int = JOB_WAIT_MS) -> None:
    page.wait_js(f"{card(job_id)}?.dataset.status === '{status}'", timeout_ms)


def job_log(page: Page, job_id: str) -> list[dict[str, Any]]:
    """The messages of one job the page handled (after its de-duplication), in order."""
    return list(page.js(f"window.jobcastDemo.eventLog.filter((m) => m.jobId === '{job_id}')") or [])


def event_key(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def assert_clean_history(messages: list[dict[str, Any]], job_id: str) -> None:
    """Live updates in order, none twice; progress never goes back; one terminal message."""
    live = [m for m in messages if m.get("eventId") and not m.get("snapshot")]
    ids = [m["eventId"] for m in live]
    assert len(ids) == len(set(ids)), f"an event was shown twice: {ids}"
    assert ids == sorted(ids, key=event_key), f"events out of order: {ids}"
    progress = [
        m["data"]["progress"]
        for m in messages
        if m["type"] == "job_status_update" and isinstance(m["data"].get("progress"), (int, float))
    ]
    assert progress == sorted(progress), f"progress went backwards: {progress}"
    terminal = [m for m in messages if m["type"] in TERMINAL_TYPES]
    assert len(terminal) <= 1, f"more than one terminal message: {terminal}"


def wait_transport_on_server(http: httpx.Client, admin: str, transport: str) -> dict[str, Any]:
    """The server's own statistics count a connection on ``transport`` (bounded wait)."""
    seen: dict[str, Any] = {}

    def counted() -> bool:
        nonlocal seen
        answer = http.get("/api/v1/websocket/stats", headers=bearer(admin))
        seen = answer.json().get("data", {})
        return int(seen.get("connectionsByTransport", {}).get(transport, 0)) >= 1

    assert wait_until(counted, 15, interval=0.25), f"no {transport} connection: {seen}"
    return seen


# --- tests


def test_job_runs_to_completion_over_websocket(
    page: Page, demo_server: DemoServer, tokens: Tokens
) -> None:
    open_page(page, demo_server.url)
    sign_in(page, "user1")
    # The default transport: polling first, upgraded to WebSocket.
    page.wait_js("document.querySelector('#connection').dataset.transport === 'websocket'")
    # A character outside the BMP in the topic (hence in the output): offsets count code
    # points, which String.length does not.
    topic = "Browsers over WebSocket 𝄞"
    job_id = start_job_in_page(page, topic, sections=5, seconds=0.4)
    wait_status(page, job_id, "completed")

    state = page.job_state(job_id)
    assert state["progress"] == 100, state
    assert "Generated Content: Browsers over WebSocket" in state["text"]
    assert f"content-{job_id}" in state["text"]
    assert page.js(f"{card(job_id)}.querySelector('.job-actions button').hidden") is True
    assert page.text(selector="#conn-transport") == "websocket"

    messages = job_log(page, job_id)
    assert_clean_history(messages, job_id)
    updates = [m for m in messages if m["type"] == "job_status_update" and not m.get("snapshot")]
    assert any(0 < m["data"].get("progress", 0) < 100 for m in updates), "no live progress"
    assert any("etaSeconds" in m["data"] for m in updates), "no ETA in the updates"
    assert [m["type"] for m in messages].count("job_completed") == 1

    # The live output, assembled by offset by jobcast-client.js, under the progress bar.
    content = content_text(topic, 5)
    assert page.js(f"{card(job_id)}.querySelector('.job-output').textContent") == content
    assert page.js(f"window.jobcastDemo.client.output('{job_id}')") == content
    chunks = page.js(f"window.jobcastDemo.jobs.get('{job_id}').outputChunks")
    assert isinstance(chunks, int) and chunks > 1, f"the text did not grow live ({chunks})"

    with httpx.Client(base_url=demo_server.url, timeout=15) as http:
        wait_transport_on_server(http, tokens.admin, "websocket")

    # The finished page, kept as a test artifact (tests/artifacts is git-ignored).
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "demo-page.png"
    page.screenshot(path=str(shot), fullPage=True)
    assert shot.stat().st_size > 20_000, "the screenshot is suspiciously small"
    width, height, colours = png_stats(shot)
    assert width == 1200 and height >= 900, (width, height)
    assert colours >= 20, f"the screenshot looks blank ({colours} colours)"
    viewport = ARTIFACTS / "demo-page-viewport.png"
    page.screenshot(path=str(viewport), fullPage=False)
    assert png_stats(viewport)[2] >= 20


def test_job_runs_to_completion_over_polling(
    page: Page, demo_server: DemoServer, tokens: Tokens
) -> None:
    open_page(page, demo_server.url, transport="polling")
    assert page.js("document.querySelector('#transport').value") == "polling"
    sign_in(page, "user2")
    assert page.text(selector="#conn-transport") == "polling"
    job_id = start_job_in_page(page, "Browsers over long-polling", sections=4, seconds=0.4)
    wait_status(page, job_id, "completed")

    state = page.job_state(job_id)
    assert (
        state["progress"] == 100
        and "Generated Content: Browsers over long-polling" in state["text"]
    ), state
    assert page.text(selector="#conn-transport") == "polling", "the forced fallback upgraded"
    # Every long-poll carried the routing hint: user2's sub (2), for a load balancer.
    polls = page.js(
        "performance.getEntriesByType('resource').map((e) => e.name)"
        ".filter((url) => url.includes('/ws/job-status/'))"
    )
    assert polls and all("uid=2&" in url or url.endswith("uid=2") for url in polls), polls
    messages = job_log(page, job_id)
    assert_clean_history(messages, job_id)
    assert any(
        m["type"] == "job_status_update" and 0 < m["data"].get("progress", 0) < 100
        for m in messages
    ), "no live progress over polling"
    with httpx.Client(base_url=demo_server.url, timeout=15) as http:
        wait_transport_on_server(http, tokens.admin, "polling")


def test_failed_and_cancelled_jobs(page: Page, demo_server: DemoServer) -> None:
    open_page(page, demo_server.url)
    sign_in(page, "user1")
    failing = start_job_in_page(page, "Doomed", sections=3, seconds=0.2, fail_at=2)
    wait_status(page, failing, "failed")
    text = page.job_state(failing)["text"]
    assert "Generation failed: section 2 of 'Doomed' could not be written" in text
    assert "task_failed" in text

    long = start_job_in_page(page, "Too long", sections=60, seconds=0.5)
    # The ETA shows once the job has reported progress twice.
    page.wait_js(
        f"{card(long)}.querySelector('.job-eta').textContent.includes('left')", JOB_WAIT_MS
    )
    page.click(selector=f"[data-job-id='{long}'] .job-actions button")
    wait_status(page, long, "cancelled")
    state = page.job_state(long)
    assert "Cancelled by its owner" in state["text"]
    assert page.js(f"{card(long)}.querySelector('.job-eta').textContent") == ""


@pytest.mark.parametrize(
    ("kind", "state", "code", "words"),
    [
        ("expired", "expired", "token_expired", ["Session expired", "Token expired"]),
        ("bad_signature", "refused", "invalid_token", ["Connection refused", "bad signature"]),
    ],
)
def test_a_refused_token_says_why(
    page: Page,
    demo_server: DemoServer,
    tokens: Tokens,
    kind: str,
    state: str,
    code: str,
    words: list[str],
) -> None:
    token = tokens.expired() if kind == "expired" else tokens.bad_signature()
    open_page(page, demo_server.url)
    page.click(selector="#signin details summary")
    page.fill(selector="#own-token", value=token)
    page.click(selector="#token-form button")
    page.wait_js(f"document.querySelector('#connection').dataset.state === '{state}'")
    page.waitFor(selector="#alert:not([hidden])")
    alert = page.text(selector="#alert")
    for word in [*words, code]:
        assert word in alert, alert
    assert code in page.text(selector="#conn-state")


def test_admin_broadcast_appears_as_a_toast(
    page: Page, demo_server: DemoServer, server: Server, tokens: Tokens
) -> None:
    open_page(page, demo_server.url)
    sign_in(page, "user1")
    assert page.js("document.querySelector('#admin').hidden") is True, "admin view for a user"

    # Through the admin API (of another instance: broadcasts cross instances via Redis).
    message = f"Maintenance window tonight {uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.url, timeout=15) as http:
        answer = http.post(
            "/api/v1/websocket/broadcast/system",
            json={"message": message, "level": "warning"},
            headers=bearer(tokens.admin),
        )
        assert answer.status_code == 200, answer.text
        maintenance = http.post(
            "/api/v1/websocket/broadcast/maintenance",
            json={"message": "Database upgrade", "durationMinutes": 20},
            headers=bearer(tokens.admin),
        )
        assert maintenance.status_code == 200, maintenance.text
    page.wait_js(
        f"[...document.querySelectorAll('#toasts .toast')].some((t) => "
        f"t.textContent.includes({json.dumps(message)}) && t.dataset.level === 'warning')"
    )
    page.wait_js(
        "[...document.querySelectorAll('#toasts .toast')].some((t) => "
        "t.textContent.includes('Database upgrade') && t.textContent.includes('for 20 min'))"
    )
    toasts = page.js("[...document.querySelectorAll('#toasts .toast')].map((t) => t.textContent)")
    assert sum(message in t for t in toasts) == 1, toasts


def test_admin_view_shows_statistics_and_broadcasts(page: Page, demo_server: DemoServer) -> None:
    open_page(page, demo_server.url, transport="websocket")
    sign_in(page, "admin")
    page.waitFor(selector="#admin")
    page.wait_js(
        "Number(document.querySelector('#stats tr[data-key=\"activeConnections\"] td')"
        "?.textContent) >= 1"
    )
    page.wait_js(
        "Number(document.querySelector('#stats tr[data-key=\"transport:websocket\"] td')"
        "?.textContent) >= 1"
    )
    message = f"Hello from the admin view {uuid.uuid4().hex[:8]}"
    page.fill(selector="#broadcast-message", value=message)
    page.select(selector="#broadcast-level", value="critical")
    page.click(selector="#broadcast-send")
    page.wait_js(
        f"[...document.querySelectorAll('#toasts .toast')].some((t) => "
        f"t.textContent.includes({json.dumps(message)}) && t.dataset.level === 'critical')"
    )
    assert page.js("document.querySelector('#conn-user').textContent") == "Admin (admin)"


def test_the_client_module_drops_duplicates_and_tracks_last_event_id(
    page: Page, demo_server: DemoServer
) -> None:
    """jobcast-client.js on its own, with a stand-in for socket.io's ``io``."""
    open_page(page, demo_server.url)
    result = page.js(
        """(async () => {
          const { JobcastClient } = await import('/static/jobcast-client.js');
          const emitted = [];
          const handlers = {};
          const fakeSocket = {
            io: { on() {}, engine: null }, connected: true,
            on(name, fn) { handlers[name] = fn; }, onAny(fn) { handlers['*'] = fn; },
            emit(type, payload) { emitted.push([type, payload]); },
          };
          let options = null;
          const io = (url, opts) => { options = opts; return fakeSocket; };
          const client = new JobcastClient({ io, url: 'http://x', token: 't' });
          const seen = [];
          client.on('*', (m) => seen.push(m.eventId ?? m.type));
          const send = (type, msg) => handlers['*'](type, { type, ...msg });
          send('job_status_update', { jobId: 'j', eventId: '10-0', data: { progress: 5 } });
          send('job_status_update', { jobId: 'j', eventId: '10-0', data: { progress: 5 } });
          send('job_status_update', { jobId: 'j', eventId: '9-5', snapshot: true, data: {} });
          send('job_completed', { jobId: 'j', eventId: '100-2', result: {} });
          send('system_notification', { eventId: '99-0', message: 'hi' });
          let auth = null;
          options.auth((a) => { auth = a; });
          return { seen, stats: client.stats, last: client.lastEventId, emitted, auth,
                   path: options.path, transports: options.transports };
        })()"""
    )
    assert result["seen"] == ["10-0", "9-5", "100-2", "99-0"]
    assert result["stats"]["duplicates"] == 1
    assert result["last"] == "100-2", "lastEventId: the newest non-snapshot id (two numbers)"
    assert result["auth"] == {"token": "t", "lastEventId": "100-2"}
    assert result["emitted"] == [["ack", {"eventId": "100-2"}], ["ack", {"eventId": "99-0"}]]
    assert result["path"] == "/ws/job-status"
    assert result["transports"] == ["polling", "websocket"]


def test_the_page_survives_a_server_restart(
    browser: Browser,
    page: Page,
    server: Server,
    redis_client: Any,
    tokens: Tokens,
    tmp_path: Path,
) -> None:
    """The server goes away mid-job; the job ends and a notification is sent meanwhile. The
    page reconnects with ``lastEventId``: the replay brings both, once each."""
    with running_demo_server(tmp_path) as restarting:
        open_page(page, restarting.url)
        sign_in(page, "user1")
        page.wait_js("document.querySelector('#connection').dataset.transport === 'websocket'")
        job_id = start_job_in_page(page, "Across a restart", sections=6, seconds=0.5)
        # A live update (not only the subscription's snapshot) has arrived: the client has a
        # lastEventId to resume from.
        page.wait_js(
            "window.jobcastDemo.eventLog.some((m) => m.type === 'job_status_update' && "
            f"m.jobId === '{job_id}' && !m.snapshot && m.data.progress > 0) && "
            "window.jobcastDemo.client.lastEventId !== null",
            JOB_WAIT_MS,
        )

        restarting.stop()
        page.wait_js("document.querySelector('#connection').dataset.state === 'reconnecting'")
        message = f"Sent while you were away {uuid.uuid4().hex[:8]}"
        with httpx.Client(base_url=server.url, timeout=15) as http:
            answer = http.post(
                "/api/v1/websocket/broadcast/system",
                json={"message": message, "level": "info"},
                headers=bearer(tokens.admin),
            )
            assert answer.status_code == 200, answer.text
        finished = wait_until(
            lambda: (
                redis_client.hget(job_partition(redis_client, job_id).job(job_id), "state")
                == "completed"
            ),
            40,
        )
        assert finished, "the job did not complete while the server was down"
        assert page.js(f"{card(job_id)}.dataset.status") != "completed"

        restarting.start()  # the same port
        wait_status(page, job_id, "completed")
        page.wait_js("document.querySelector('#connection').dataset.state === 'connected'")
        page.wait_js(
            f"[...document.querySelectorAll('#toasts .toast')].some((t) => "
            f"t.textContent.includes({json.dumps(message)}))"
        )
        client = page.js(
            "(({ stats, recovered, lastEventId }) => ({ stats, recovered, lastEventId }))"
            "(window.jobcastDemo.client)"
        )
        assert client["recovered"] is True, f"{client}\n{restarting.logs()[-3000:]}"
        assert client["stats"]["reconnects"] >= 1, client
        assert "recovered" in page.text(selector="#conn-state")

        messages = job_log(page, job_id)
        assert_clean_history(messages, job_id)
        completed = [m for m in messages if m["type"] == "job_completed"]
        assert len(completed) == 1, completed
        toasts = page.js(
            "[...document.querySelectorAll('#toasts .toast')].map((t) => t.textContent)"
        )
        assert sum(message in t for t in toasts) == 1, toasts
        assert page.job_state(job_id)["progress"] == 100


def test_demo_mode_off(server: Server) -> None:
    """Without JOBCAST_DEMO: no demo token endpoint, `/` leads to the API docs; the static
    client module is served all the same."""
    with httpx.Client(base_url=server.url, timeout=15) as http:
        index = http.get("/", follow_redirects=False)
        assert index.status_code == 307 and index.headers["location"] == "/docs"
        for method, path in (("POST", "/api/v1/demo/token"), ("GET", "/api/v1/demo/users")):
            answer = http.request(method, path, json={"user": "admin"})
            assert answer.status_code == 404, (path, answer.text)
        module = http.get("/static/jobcast-client.js")
        assert module.status_code == 200 and "export class JobcastClient" in module.text
        assert "javascript" in module.headers["content-type"]


def test_demo_token_endpoint(demo_server: DemoServer) -> None:
    """Demo mode: tokens for the demo users, accepted by the API; none of them in the log."""
    with httpx.Client(base_url=demo_server.url, timeout=15) as http:
        page = http.get("/")
        assert page.status_code == 200 and "<title>jobcast demo</title>" in page.text
        users = http.get("/api/v1/demo/users").json()["data"]["users"]
        assert [u["user"] for u in users] == ["user1", "user2", "admin"]

        issued = {}
        for user in ("user1", "admin"):
            answer = http.post("/api/v1/demo/token", json={"user": user})
            assert answer.status_code == 200, answer.text
            issued[user] = answer.json()["data"]
        assert issued["user1"]["userId"] == 1 and issued["admin"]["roles"] == ["ADMIN"]
        jobs = http.get("/api/v1/jobs", headers=bearer(issued["user1"]["token"]))
        assert jobs.status_code == 200, jobs.text
        stats = http.get("/api/v1/websocket/stats", headers=bearer(issued["admin"]["token"]))
        assert stats.status_code == 200, stats.text
        refused = http.get("/api/v1/websocket/stats", headers=bearer(issued["user1"]["token"]))
        assert refused.status_code == 403

        unknown = http.post("/api/v1/demo/token", json={"user": "root"})
        assert unknown.status_code == 422 and unknown.json()["code"] == "validation_error"

        vendor = http.get("/static/vendor/socket.io.min.js")
        assert vendor.status_code == 200 and "Socket.IO v4" in vendor.text[:200]
        assert http.get("/static/vendor/nothing.js").status_code == 404

    logs = demo_server.logs()
    for data in issued.values():
        assert data["token"] not in logs
        assert data["token"].split(".")[2] not in logs


def test_vendor_file_comes_from_node_modules() -> None:
    """socket.io-client is npm's, pinned by the lockfile, never a copy in the repository."""
    lock = json.loads((REPO / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/socket.io-client"]["version"]
    declared = json.loads((REPO / "package.json").read_text())["dependencies"]["socket.io-client"]
    assert pinned == declared, "package.json pins the exact version the lockfile holds"
    copies = [
        path
        for path in (REPO / "api").rglob("*.js")
        if "Socket.IO v" in path.read_text(errors="replace")[:300]
    ]
    assert not copies, f"a copy of socket.io-client is in the tree: {copies}"
    if not (NODE_MODULES / "socket.io-client").is_dir():
        missing_tool("node_modules/socket.io-client is not installed: run `make web` (npm ci)")
    installed = json.loads((NODE_MODULES / "socket.io-client" / "package.json").read_text())
    assert installed["version"] == pinned


def test_showcase_screenshot(page: Page, demo_server: DemoServer, server: Server) -> None:
    """Several jobs at once (done, failed, running, each with its text) and a toast: the page
    the README shows (docs/demo-page.png is a copy of the artifact this test saves)."""
    open_page(page, demo_server.url)
    sign_in(page, "user1")
    page.wait_js("document.querySelector('#connection').dataset.transport === 'websocket'")
    done = start_job_in_page(page, "Release notes", sections=3, seconds=0.2)
    wait_status(page, done, "completed")
    failed = start_job_in_page(page, "Quarterly report", sections=4, seconds=0.2, fail_at=3)
    wait_status(page, failed, "failed")
    running = start_job_in_page(page, "Redis Streams in depth", sections=50, seconds=0.4)
    page.wait_js(
        f"Number({card(running)}.dataset.progress) >= 10 && "
        f"{card(running)}.querySelector('.job-eta').textContent.includes('left')",
        JOB_WAIT_MS,
    )
    tokens = Tokens(demo_server.env["JOBCAST_JWT_SECRET"])
    with httpx.Client(base_url=server.url, timeout=15) as http:
        answer = http.post(
            "/api/v1/websocket/broadcast/system",
            json={"message": "Deploying a new version in 10 minutes", "level": "warning"},
            headers=bearer(tokens.admin),
        )
        assert answer.status_code == 200, answer.text
    page.wait_js("document.querySelectorAll('#toasts .toast').length > 0")
    page.js(
        "window.scrollTo(0, document.querySelector('#start').offsetTop"
        " - document.querySelector('.topbar').offsetHeight - 16)"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "demo-showcase.png"
    page.screenshot(path=str(shot), fullPage=False)
    width, height, colours = png_stats(shot)
    assert (width, height) == (1200, 900) and colours >= 20, (width, height, colours)
    assert page.job_state(running)["status"] == "processing"
    page.click(selector=f"[data-job-id='{running}'] .job-actions button")
    wait_status(page, running, "cancelled")


def test_a_demo_session_renews_its_token_when_warned(page: Page, tmp_path: Path) -> None:
    """``session_expiring`` makes the page fetch a fresh demo token and send it as
    ``refresh_token``; the connection stays up. (A warning window longer than the demo
    token's life makes the server warn at once.)"""
    with running_demo_server(tmp_path, JOBCAST_SESSION_WARNING_SECONDS="7200") as warning:
        open_page(page, warning.url)
        sign_in(page, "user2")
        page.wait_js(
            "[...document.querySelectorAll('#toasts .toast')].some((t) => "
            "t.textContent.includes('Session renewed'))"
        )
        types = page.js("window.jobcastDemo.eventLog.map((m) => m.type)")
        assert "session_expiring" in types and "token_refreshed" in types, types
        assert page.js("document.querySelector('#connection').dataset.state") == "connected"
        assert page.js("document.querySelector('#alert').hidden") is True
