"""notifier.transport.compat: every library name the fast path relies on exists in the
installed versions, and a missing one is named and sends the process to the stock path."""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterator

import engineio
import pytest
import socketio
import uvicorn.protocols.utils

from notifier.transport import compat
from notifier.transport.client_session import socketio_client


@pytest.fixture(autouse=True)
def _fresh_choice() -> Iterator[None]:
    compat.choose.cache_clear()
    compat.client_path.cache_clear()
    yield
    compat.choose.cache_clear()
    compat.client_path.cache_clear()


def test_the_installed_libraries_have_every_name_the_fast_path_uses() -> None:
    # Fails on the day an upstream release renames or removes one of them.
    assert compat.missing() == []


def test_every_library_of_the_boundary_is_checked() -> None:
    assert {need.library for need in compat.NEEDS} == {
        "uvicorn",
        "websockets",
        "python-engineio",
        "python-socketio",
    }


def test_a_removed_name_is_reported_with_library_and_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(uvicorn.protocols.utils, "ClientDisconnected")
    gaps = compat.missing()
    version = importlib.metadata.version("uvicorn")
    assert [str(gap) for gap in gaps] == [
        f"uvicorn {version}: uvicorn.protocols.utils:ClientDisconnected"
    ]


def test_a_removed_name_means_the_stock_path_and_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(uvicorn.protocols.utils, "ClientDisconnected")
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        assert compat.choose(True) == compat.STOCK
        assert compat.choose(True) == compat.STOCK  # decided once per process
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "uvicorn" in text and importlib.metadata.version("uvicorn") in text
    assert "ClientDisconnected" in text and "stock path" in text


def test_fast_is_chosen_when_asked_and_nothing_is_missing() -> None:
    assert compat.choose(True) == compat.FAST


def test_stock_is_chosen_when_asked_without_a_check(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        assert compat.choose(False) == compat.STOCK
    assert caplog.records == []


def test_a_changed_signature_is_reported() -> None:
    need = compat.Need(
        "python-engineio", "engineio.async_socket:AsyncSocket.close", ("wait", "how_long")
    )
    (gap,) = compat.missing((need,))
    assert gap.library == "python-engineio"
    assert gap.name.startswith("engineio.async_socket:AsyncSocket.close(wait, abort")


def test_an_instance_attribute_the_class_no_longer_assigns_is_reported() -> None:
    need = compat.Need(
        "uvicorn",
        "uvicorn.protocols.websockets.websockets_sansio_impl:WebSocketsSansIOProtocol",
        assigned=("conn", "no_such_attribute"),
    )
    (gap,) = compat.missing((need,))
    assert gap.name.endswith(".no_such_attribute")


def test_a_library_that_is_not_installed_is_reported() -> None:
    need = compat.Need("no-such-library", "no_such_module:Thing")
    (gap,) = compat.missing((need,))
    assert str(gap) == "no-such-library not installed: no_such_module:Thing"


def test_an_attribute_the_fast_path_does_not_set_is_reported() -> None:
    # FastMessage builds engine.io packets itself: a new attribute of Packet would be unset.
    need = compat.Need(
        "python-engineio",
        "engineio.packet:Packet",
        assigned=("packet_type", "data", "binary"),
        only=True,
    )
    (gap,) = compat.missing((need,))
    assert gap.name == "engineio.packet:Packet .encode_cache (not set here)"


def test_the_installed_clients_have_every_name_the_hardened_client_uses() -> None:
    assert compat.missing(compat.CLIENT_NEEDS) == []
    assert compat.client_path() == compat.FAST
    client = socketio_client(reconnection=False)
    # python-engineio's client under it reads a long-poll's body inside its error handling
    assert isinstance(client.eio, engineio.AsyncClient)
    assert type(client.eio) is not engineio.AsyncClient


def test_a_client_name_removed_means_the_stock_client_and_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(engineio.AsyncClient, "_send_request")
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        assert compat.client_path() == compat.STOCK
        client = socketio_client(reconnection=False)
        socketio_client(reconnection=False)  # decided once per process
    assert type(client) is socketio.AsyncClient
    assert type(client.eio) is engineio.AsyncClient
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "python-engineio" in text and importlib.metadata.version("python-engineio") in text
    assert "AsyncClient._send_request" in text and "stock" in text
