"""The demo page's admin view follows the ``ops`` channel, in a real headless Chromium:
an admin signed in is subscribed to ``ops`` and sees, in the ops panel, another user's
job error (not as a job card of their own) and a message sent to ``ops`` from the page.
The screenshot (``tests/artifacts/ops-channel.png``) is the README's operators picture.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.browser_helpers import (
    ARTIFACTS,
    Browser,
    DemoServer,
    Page,
    png_stats,
)
from tests.support.helpers import Tokens, bearer

pytestmark = pytest.mark.integration

JOB_WAIT_MS = 40000


def ops_items(page: Page) -> list[dict[str, str]]:
    return list(
        page.js(
            "[...document.querySelectorAll('#ops-feed li')].map((li) => "
            "({type: li.dataset.type, level: li.dataset.level, text: li.textContent}))"
        )
        or []
    )


def test_admin_sees_every_users_job_errors_and_ops_messages(
    browser: Browser, demo_server: DemoServer, tokens: Tokens
) -> None:
    page = Page(browser)
    page.newPage(width=1200, height=900)
    page.goto(url=f"{demo_server.url}/?transport=websocket")
    page.waitFor(selector="body[data-ready='true']")
    assert page.js("document.querySelector('#admin').hidden") is True
    page.click(selector="#users button[data-user='admin']")
    page.wait_js("document.querySelector('#connection').dataset.state === 'connected'")
    page.wait_js("document.querySelector('#ops-state').textContent === 'subscribed'")

    # The admin's own job, started in the page, completes as usual.
    page.fill(selector="#topic", value="Quarterly report")
    page.fill(selector="#sections", value="2")
    page.fill(selector="#seconds", value="0.2")
    page.click(selector="#start-job")
    page.wait_js(
        "document.querySelector('#jobs .job')?.dataset.status === 'completed'", JOB_WAIT_MS
    )

    # Another user's job fails: the admin sees its job_error in the ops panel only.
    with httpx.Client(base_url=demo_server.url, timeout=15) as http:
        response = http.post(
            "/api/v1/jobs",
            json={
                "topic": "Broken import",
                "sections": 2,
                "secondsPerSection": 0.1,
                "failAtSection": 1,
            },
            headers=bearer(tokens.alice),
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["data"]["jobId"]
    page.wait_js(
        "[...document.querySelectorAll('#ops-feed li[data-type=\"job_error\"]')]"
        f".some((li) => li.textContent.includes({json.dumps(job_id)}))",
        JOB_WAIT_MS,
    )
    assert page.js(f"document.querySelector('[data-job-id={json.dumps(job_id)}]')") is None

    # A message to `ops` from the page's own form reaches the panel too.
    page.fill(selector="#channel-message", value="Queue backlog above 1,000 tasks")
    page.select(selector="#channel-name", value="ops")
    page.select(selector="#channel-level", value="warning")
    page.click(selector="#channel-send")
    page.wait_js(
        "[...document.querySelectorAll('#ops-feed li[data-type=\"channel_message\"]')]"
        ".some((li) => li.textContent.includes('Queue backlog above 1,000 tasks'))"
    )
    items = ops_items(page)
    assert [i["type"] for i in items] == ["channel_message", "job_error"], items
    assert items[0]["level"] == "warning" and "task_failed" in items[1]["text"], items

    page.wait_js(  # the statistics of a live page, not of its first second
        "Number(document.querySelector('#stats tr[data-key=\"activeConnections\"] td')"
        "?.textContent) >= 1"
    )
    page.js(  # the admin panel at the top, below the top bar
        "window.scrollTo(0, document.querySelector('#admin').getBoundingClientRect().top"
        " + window.scrollY - document.querySelector('.topbar').offsetHeight - 16)"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "ops-channel.png"
    page.screenshot(path=str(shot), fullPage=False)
    width, height, colours = png_stats(shot)
    assert (width, height) == (1200, 900) and colours > 20, (width, height, colours)
