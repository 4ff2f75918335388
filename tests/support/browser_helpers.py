"""Real-browser test helpers: Debian's Chromium driven by playwright-core (npm) from Python.

``tests/support/browser_driver.mjs`` runs in Node and launches Chromium; :class:`Browser` sends it
one JSON command per line and reads one answer per line, each with a bounded wait. The
demo server (``JOBCAST_DEMO=1``) is a ``python -m api`` process of our own that keeps its
port across :meth:`DemoServer.restart`, for the reconnection test.

Where Chromium, Node or the npm packages are missing, the tests are skipped with the reason,
except under CI (``CI`` set), where they fail saying what to install: CI must run them.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.env import REPO, child_env, free_port, missing_tool
from tests.support.processes import START_TIMEOUT, log_tail, stop_process
from tests.support.waiting import wait_until

DRIVER = REPO / "tests" / "support" / "browser_driver.mjs"
NODE_MODULES = REPO / "node_modules"
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
#: Bound for one browser command (the driver's own Playwright waits are shorter).
COMMAND_TIMEOUT = 60.0


def find_chromium() -> str | None:
    configured = os.environ.get("JOBCAST_TEST_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def require_browser_tools() -> tuple[str, str]:
    """(node, chromium) paths, or skip/fail saying what is missing."""
    chromium = find_chromium()
    if chromium is None:
        missing_tool("Chromium not found (apt-get install chromium, or set JOBCAST_TEST_CHROMIUM)")
    node = shutil.which("node")
    if node is None:
        missing_tool("node not found (Node.js runs playwright-core)")
    for package in ("playwright-core", "socket.io-client"):
        if not (NODE_MODULES / package / "package.json").is_file():
            missing_tool(f"node_modules/{package} is not installed: run `make web` (npm ci)")
    assert chromium is not None and node is not None
    return node, chromium


class BrowserError(AssertionError):
    """A browser command failed or did not answer in time."""


class Browser:
    """The driver process: ``call("goto", url=...)`` and friends."""

    def __init__(self, node: str, chromium: str, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [node, str(DRIVER), chromium],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="browser-driver", daemon=True)
        self._reader.start()
        self._next_id = 0
        hello = self._next(COMMAND_TIMEOUT, "the driver to start Chromium")
        if not hello.get("ready"):
            raise BrowserError(f"unexpected first line from the driver: {hello}")
        self.version = str(hello.get("version"))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self._answers.put(json.loads(line))
        self._answers.put(None)  # the driver exited

    def _next(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise BrowserError(
                f"no answer from the browser driver within {timeout:g} s while waiting for "
                f"{what}; driver log:\n{log_tail(self.log_path)}"
            ) from None
        if answer is None:
            raise BrowserError(
                f"the browser driver exited (code {self.proc.poll()}) while waiting for "
                f"{what}; driver log:\n{log_tail(self.log_path)}"
            )
        return answer

    def call(self, cmd: str, **params: Any) -> Any:
        self._next_id += 1
        request = {"id": self._next_id, "cmd": cmd, **params}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self._next(COMMAND_TIMEOUT, f"{cmd} {params}")
        if answer.get("id") != self._next_id:
            raise BrowserError(f"answer out of order: sent {request}, got {answer}")
        if not answer.get("ok"):
            logs = "" if cmd == "console" else "\n  ".join(self.console()[-30:])
            raise BrowserError(f"{cmd} {params} failed: {answer.get('error')}\npage log:\n  {logs}")
        return answer.get("result")

    def console(self) -> list[str]:
        try:
            return list(self.call("console"))
        except BrowserError as exc:
            return [f"<console unavailable: {exc}>"]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.close()  # EOF: the driver closes the browser and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        stop_process(self.proc, group=True)  # by PID, with Chromium's process group
        self._reader.join(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()
        self._log.close()


class Page:
    """Convenience over :class:`Browser` for the demo page."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser

    def __getattr__(self, cmd: str) -> Any:
        return lambda **params: self.browser.call(cmd, **params)

    def wait_js(self, expression: str, timeout_ms: int = 20000) -> Any:
        return self.browser.call("waitForFunction", expression=expression, timeout=timeout_ms)

    def js(self, expression: str) -> Any:
        return self.browser.call("evaluate", expression=expression)

    def job_state(self, job_id: str) -> dict[str, Any]:
        return dict(
            self.js(
                f"(() => {{ const c = document.querySelector('[data-job-id=\"{job_id}\"]');"
                " return c && {status: c.dataset.status, progress: Number(c.dataset.progress),"
                " text: c.innerText}; })()"
            )
            or {}
        )


# --- the demo server


class DemoServer:
    """``python -m api`` with ``JOBCAST_DEMO=1`` on a fixed port of 127.0.0.1."""

    def __init__(self, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.env = child_env(JOBCAST_DEMO="1", **env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"server-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        args = [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                return True
            try:
                return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(ready, START_TIMEOUT, interval=0.2) or proc.poll() is not None:
            self.stop()
            pytest.fail(
                f"demo server did not become ready (exit code {proc.poll()}):\n"
                f"{log_tail(self.log_path)}"
            )

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, group=True)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def logs(self) -> str:
        return "\n".join(
            (self.log_dir / f"server-{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
        )


@contextlib.contextmanager
def running_demo_server(log_dir: Path, **env: str) -> Iterator[DemoServer]:
    server = DemoServer(log_dir, **env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- screenshots


def png_stats(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct colours in a sample of pixels) of an 8-bit RGB(A) PNG, read
    with zlib alone (no imaging library needed): enough to tell a page from a blank one."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or colour_type not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {colour_type})")
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    colours: set[bytes] = set()
    previous = bytearray(stride)
    offset = 0
    for row_index in range(height):
        kind = raw[offset]
        row = bytearray(raw[offset + 1 : offset + 1 + stride])
        offset += 1 + stride
        _unfilter(kind, row, previous, channels)
        if row_index % 7 == 0:
            for x in range(0, stride, channels * 5):
                colours.add(bytes(row[x : x + 3]))
        previous = row
    return width, height, len(colours)


def _unfilter(kind: int, row: bytearray, prev: bytearray, bpp: int) -> None:
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        up = prev[i]
        upper_left = prev[i - bpp] if i >= bpp else 0
        if kind == 1:
            row[i] = (row[i] + left) & 0xFF
        elif kind == 2:
            row[i] = (row[i] + up) & 0xFF
        elif kind == 3:
            row[i] = (row[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            p = left + up - upper_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
            predictor = left if pa <= pb and pa <= pc else up if pb <= pc else upper_left
            row[i] = (row[i] + predictor) & 0xFF
