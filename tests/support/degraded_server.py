"""``python -m tests.support.degraded_server``: ``python -m api`` on a uvicorn that lacks a
name jobcast's fast transport path relies on, as a uvicorn release that renamed it would.

uvicorn's own modules have imported ``ClientDisconnected`` already and keep working; only
the name is gone from ``uvicorn.protocols.utils``, where the compat check looks for it.
"""

from __future__ import annotations

import uvicorn.protocols.utils
import uvicorn.protocols.websockets.websockets_sansio_impl  # imports the name first

del uvicorn.protocols.utils.ClientDisconnected

from notifier.transport.serve import main  # noqa: E402

if __name__ == "__main__":
    main("api.app:app")
