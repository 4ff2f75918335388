"""The start-up check of every library name the fast transport path relies on.

The fast path (:mod:`notifier.transport.uvicorn_fast`, :mod:`~.engineio_fast`,
:mod:`~.socketio_fast`) subclasses and overrides parts of uvicorn, websockets,
python-engineio and python-socketio that those libraries do not document. Before anything
is patched, :func:`missing` looks up each of those names, as attributes of the installed
modules and classes, as instance attributes assigned in their source, and as method
signatures. :func:`choose` picks the path once per process: the fast one only when it was
asked for (``JOBCAST_FAST_TRANSPORT``, default true) and nothing is missing; otherwise the
libraries' stock path, with one WARNING that names each missing piece.

The clients' side (:mod:`notifier.transport.client_session`) is checked the same way, by
its own list (:data:`CLIENT_NEEDS`, :func:`client_path`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

FAST = "fast"
STOCK = "stock"


@dataclass(frozen=True)
class Need:
    """One name of ``library`` the fast path uses.

    ``target`` is ``module:attribute.path``. ``params`` are the parameter names (after
    ``self``) of a method the fast path overrides or calls; ``assigned`` are instance
    attributes the fast path reads, which the class (or a base of the same library)
    must assign in its source; with ``only``, it must assign no others (the fast path
    builds such objects itself, setting each of them).
    """

    library: str
    target: str
    params: tuple[str, ...] | None = None
    assigned: tuple[str, ...] = ()
    only: bool = False


@dataclass(frozen=True)
class Missing:
    library: str
    version: str
    name: str

    def __str__(self) -> str:
        return f"{self.library} {self.version}: {self.name}"


_UVICORN_WS = "uvicorn.protocols.websockets.websockets_sansio_impl:WebSocketsSansIOProtocol"
_EIO_SOCKET = "engineio.async_socket:AsyncSocket"
_EIO_SERVER = "engineio.async_server:AsyncServer"
_SIO_SERVER = "socketio.async_server:AsyncServer"

#: Everything the fast path overrides or reads, library by library.
NEEDS: tuple[Need, ...] = (
    # uvicorn: the websockets-sansio protocol that uvicorn_fast.FastWebSocketProtocol extends
    Need("uvicorn", f"{_UVICORN_WS}.__init__"),
    Need("uvicorn", f"{_UVICORN_WS}.data_received", ("data",)),
    Need("uvicorn", f"{_UVICORN_WS}.run_asgi", ()),
    Need("uvicorn", f"{_UVICORN_WS}.send", ("message",)),
    Need("uvicorn", f"{_UVICORN_WS}.send_500_response", ()),
    Need("uvicorn", f"{_UVICORN_WS}.receive", ()),
    Need("uvicorn", f"{_UVICORN_WS}.start_keepalive", ()),
    Need("uvicorn", f"{_UVICORN_WS}.stop_keepalive", ()),
    Need(
        "uvicorn",
        _UVICORN_WS,
        assigned=(
            "app",
            "logger",
            "close_timer",
            "conn",
            "queue",
            "transport",
            "scope",
            "loop",
            "handshake_initiated",
            "handshake_complete",
            "close_sent",
            "disconnected",
            "initial_response",
            "writable",
            "request",
            "response",
        ),
    ),
    Need("uvicorn", "uvicorn.protocols.utils:ClientDisconnected"),
    # websockets: the sans-I/O connection under that protocol
    Need("websockets", "websockets.protocol:Protocol.parse", ()),
    Need("websockets", "websockets.protocol:Protocol.data_to_send", ()),
    Need("websockets", "websockets.protocol:Protocol.send_text", ("data", "fin")),
    Need("websockets", "websockets.protocol:Protocol.send_binary", ("data", "fin")),
    Need(
        "websockets",
        "websockets.protocol:Protocol",
        assigned=("state", "writes", "reader", "parser", "handshake_exc"),
    ),
    Need("websockets", "websockets.protocol:State.OPEN"),
    Need("websockets", "websockets.exceptions:InvalidState"),
    # python-engineio: the session and the server that engineio_fast overrides
    Need("python-engineio", f"{_EIO_SOCKET}.poll", ()),
    Need("python-engineio", f"{_EIO_SOCKET}.send", ("pkt",)),
    Need("python-engineio", f"{_EIO_SOCKET}.receive", ("pkt",)),
    Need("python-engineio", f"{_EIO_SOCKET}.check_ping_timeout", ()),
    Need("python-engineio", f"{_EIO_SOCKET}.schedule_ping", ()),
    Need("python-engineio", f"{_EIO_SOCKET}.close", ("wait", "abort", "reason")),
    Need("python-engineio", f"{_EIO_SOCKET}._upgrade_websocket", ("environ",)),
    Need("python-engineio", f"{_EIO_SOCKET}._websocket_handler", ("ws",)),
    Need(
        "python-engineio",
        _EIO_SOCKET,
        assigned=(
            "server",
            "sid",
            "queue",
            "upgrading",
            "upgraded",
            "connected",
            "closing",
            "closed",
            "last_ping",
        ),
    ),
    Need("python-engineio", "engineio.async_drivers.asgi:WebSocket", assigned=("asgi_receive",)),
    Need("python-engineio", f"{_EIO_SERVER}.create_queue"),
    Need("python-engineio", f"{_EIO_SERVER}.create_event"),
    Need("python-engineio", f"{_EIO_SERVER}.disconnect", ("sid",)),
    Need("python-engineio", f"{_EIO_SERVER}._service_task", ()),
    Need(
        "python-engineio",
        "engineio.base_server:BaseServer",
        assigned=(
            "sockets",
            "service_task_event",
            "ping_interval",
            "ping_timeout",
            "max_http_buffer_size",
        ),
    ),
    Need("python-engineio", "engineio.base_server:BaseServer.reason.SERVER_DISCONNECT"),
    Need("python-engineio", "engineio.base_server:BaseServer.reason.TRANSPORT_CLOSE"),
    Need("python-engineio", "engineio.payload:Payload.max_decode_packets"),
    # socketio_fast.FastMessage: a text MESSAGE packet built without Packet.__init__
    Need(
        "python-engineio",
        "engineio.packet:Packet",
        assigned=("packet_type", "data", "encode_cache", "binary"),
        only=True,
    ),
    Need("python-engineio", "engineio.packet:MESSAGE"),
    Need("python-engineio", "engineio.exceptions:QueueEmpty"),
    Need("python-engineio", "engineio.exceptions:UnknownPacketError"),
    Need("python-engineio", "engineio.exceptions:SocketIsClosedError"),
    # python-socketio: the server hook socketio_fast overrides, the dispatch it calls
    Need("python-socketio", f"{_SIO_SERVER}._engineio_server_class", ()),
    Need(
        "python-socketio",
        f"{_SIO_SERVER}._handle_event",
        ("eio_sid", "namespace", "id", "data"),
    ),
    Need("python-socketio", "socketio.base_manager:BaseManager.sid_from_eio_sid"),
    Need("python-socketio", "socketio.base_manager:BaseManager.eio_sid_from_sid"),
)


_EIO_CLIENT = "engineio.async_client:AsyncClient"

#: Everything :mod:`notifier.transport.client_session` overrides or reads of
#: python-socketio's and python-engineio's clients (the product's client helper and the
#: tests' clients); checked once per process by :func:`client_path`.
CLIENT_NEEDS: tuple[Need, ...] = (
    Need("python-socketio", "socketio.async_client:AsyncClient._engineio_client_class", ()),
    Need(
        "python-engineio",
        f"{_EIO_CLIENT}._send_request",
        ("method", "url", "headers", "body", "timeout"),
    ),
    Need(
        "python-engineio",
        _EIO_CLIENT,
        assigned=("state", "current_transport", "write_loop_task", "http", "logger"),
    ),
)


def _resolve(target: str) -> object:
    module_name, _, path = target.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in path.split(".") if path else ():
        obj = getattr(obj, part)
    return obj


def _assigned_names(cls: type, library_module: str) -> set[str]:
    """Instance attributes ``self.<name> = ...`` assigned in ``cls`` or its bases that
    belong to the same library (by top-level module name)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] != library_module:
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        names.update(re.findall(r"self\.(\w+)\s*(?::[^=\n]+)?=[^=]", source))
    return names


def _version(library: str) -> str:
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def missing(needs: tuple[Need, ...] = NEEDS) -> list[Missing]:
    """Every need of the fast path the installed libraries do not meet (empty: all met)."""
    found: list[Missing] = []
    for need in needs:
        version = _version(need.library)
        try:
            obj = _resolve(need.target)
        except (ImportError, AttributeError):
            found.append(Missing(need.library, version, need.target))
            continue
        if need.params is not None:
            try:
                params = tuple(inspect.signature(obj).parameters)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                params = ()
            actual = params[1:] if params[:1] == ("self",) else params
            if actual[: len(need.params)] != need.params:
                shown = ", ".join(actual)
                found.append(Missing(need.library, version, f"{need.target}({shown})"))
        if need.assigned:
            if not isinstance(obj, type):
                found.append(Missing(need.library, version, f"{need.target} (not a class)"))
                continue
            library_module = need.target.split(".")[0].split(":")[0]
            have = _assigned_names(obj, library_module)
            for name in need.assigned:
                if name not in have:
                    found.append(Missing(need.library, version, f"{need.target} .{name}"))
            if need.only:
                for name in sorted(have - set(need.assigned)):
                    found.append(
                        Missing(need.library, version, f"{need.target} .{name} (not set here)")
                    )
    return found


def _warn(what: str, gaps: list[Missing]) -> None:
    log.warning(
        "%s (%s)",
        what,
        "; ".join(str(gap) for gap in gaps),
        extra={"libraries": sorted({f"{gap.library} {gap.version}" for gap in gaps})},
    )


@functools.cache
def choose(fast_requested: bool) -> str:
    """:data:`FAST` or :data:`STOCK` for this process, decided once.

    When the fast path was asked for and cannot run, logs one WARNING naming each
    library, its version and what it lacks."""
    if not fast_requested:
        return STOCK
    gaps = missing()
    if not gaps:
        return FAST
    _warn("fast transport unavailable; serving through the stock path", gaps)
    return STOCK


@functools.cache
def client_path() -> str:
    """:data:`FAST` when python-socketio's and python-engineio's clients have every name in
    :data:`CLIENT_NEEDS` (jobcast's clients then use the hardened client of
    :mod:`notifier.transport.client_session`), else :data:`STOCK`, with one WARNING."""
    gaps = missing(CLIENT_NEEDS)
    if not gaps:
        return FAST
    _warn("hardened Socket.IO client unavailable; clients use the stock one", gaps)
    return STOCK
