"""What the tests import (``tests/conftest.py`` holds only fixtures and hooks).

- ``env``: the tests' environment (set on import, before notifier's settings are read),
  ``child_env()`` for every process they start, ``free_port()``, ``REPO``.
- ``waiting``: the one bounded wait, ``wait_until`` (blocking) / ``wait_until_async``.
- ``processes``: Redis, Celery workers and ``python -m api`` servers the tests own.
- ``helpers``: tokens, the Socket.IO / native / raw WebSocket test clients, REST calls.
- ``hostile_helpers``: crafted JWTs, dedicated servers, raw Engine.IO polling (security).
- ``limits_helpers``: the limits server's limits and ways past them (security/limits).
- ``fault_helpers``: notifier processes to kill, a failover proxy, the producer, the
  history checker (delivery and cluster tests).
- ``celery_helpers``, ``celery_local_app``, ``fault_celery_app``: the tests' own Celery
  apps and their workers.
- ``browser_helpers``, ``browser_driver.mjs``: Chromium driven by playwright-core.
- ``producer``: a stand-in for workers, run as ``python -m tests.support.producer``.
- ``degraded_server``: ``python -m api`` on a uvicorn missing a name the fast transport
  path relies on (transport tests).

Nothing here runs on import except ``env``: the apps and the producer are also loaded by
the processes the tests start.
"""
