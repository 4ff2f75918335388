"""jobcast's Celery side: ``workers.install(app)`` and ``workers.submit(task, ..., user_id=)``
(a task, a signature, or a group, chain or chord, which is then one job), and
``workers.notify(channel, message, level="info", **data)`` from any process.

Importing this package builds no Celery app and opens no connection; the bundled app
lives in ``workers.app``.
"""

from __future__ import annotations

from workers.channels import notify
from workers.install import install
from workers.submit import submit

__all__ = ["install", "notify", "submit"]
