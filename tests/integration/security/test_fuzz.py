"""Bad input everywhere (SPEC section 4): garbage on every transport is answered with an
``error`` (or, for packets Socket.IO itself cannot parse, ignored); the connection stays
open and answers ``ping``; another client keeps receiving its job's events throughout.
REST bodies of the wrong shape are 422 naming the field.

The generator is seeded (the seed is in every failure message) and paced under the rate
limit, so a run is reproducible and every message is really handled. It leaves out the
few inputs with a known product bug; those have tests of their own below, each naming
its input exactly.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import string
from typing import Any

import pytest
import websockets

from tests.support.helpers import (
    NativeClient,
    Recorder,
    SioClient,
    Tokens,
    bearer,
    is_terminal,
    is_type,
    start_job,
)
from tests.support.hostile_helpers import EIO_PATH
from tests.support.processes import Server

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("JOBCAST_FUZZ_SEED", "20260") or "20260")
FRAMES = 45  # per transport
PACE = 1 / 15  # seconds between frames: under the 20/s rate limit
TYPES = ["subscribe_job", "unsubscribe_job", "subscribe_channel", "unsubscribe_channel",
         "ping", "ack", "refresh_token"]  # fmt: skip
FIELDS = ["type", "jobId", "channel", "eventId", "token", "data", "__proto__", ""]
WEIRD_TEXT = [
    "",
    " ",
    "\u0000",
    "\u202e\u0644\u0627",  # right-to-left override, Arabic
    "\u200b\u200d",  # zero-width
    "\U0001f4a3" * 50,  # emoji (outside the BMP, as surrogate pairs in JSON)
    "e\u0301" * 20,  # combining marks
    "'; DROP TABLE jobs; --",
    "../../../../etc/passwd",
    "${jndi:ldap://127.0.0.1/x}",
    "{{7*7}}",
    "%s%s%s%n",
    "ops",
    "notifications\u0000",
    "1795636219079-0",
    "9" * 400,
    "-0-0",
]


class Fuzz:
    """Random JSON values and frames. No lone surrogates and at most 60 levels of nesting:
    those two have their own tests (known product bugs on the native endpoint)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def text(self) -> str:
        rng = self.rng
        pick = rng.random()
        if pick < 0.4:
            return rng.choice(WEIRD_TEXT)
        if pick < 0.7:
            alphabet = string.printable + "\u00e9\u20ac\u4e2d\u0416\U0001f600"
            return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        return "".join(chr(rng.choice([rng.randint(32, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))
                       for _ in range(rng.randint(1, 12)))  # fmt: skip

    def number(self) -> Any:
        return self.rng.choice(
            [0, -1, 2**31, 2**63, -(2**64), 10**300, 1e308, -1e-308, 0.5, -0.0, 1e16 + 1]
        )

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        kinds = ["text", "number", "bool", "null"]
        if depth < 5:
            kinds += ["list", "dict"] * 2
        kind = rng.choice(kinds)
        if kind == "text":
            return self.text()
        if kind == "number":
            return self.number()
        if kind == "bool":
            return rng.random() < 0.5
        if kind == "null":
            return None
        if kind == "list":
            return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {self.key(): self.value(depth + 1) for _ in range(rng.randint(0, 4))}

    def key(self) -> str:
        return self.rng.choice(FIELDS) if self.rng.random() < 0.6 else self.text()

    def message(self) -> Any:
        """Mostly objects that look like client messages, with wrong or hostile fields."""
        rng = self.rng
        if rng.random() < 0.15:
            return self.value()
        msg: dict[str, Any] = {"type": rng.choice(TYPES) if rng.random() < 0.8 else self.text()}
        for field in rng.sample(FIELDS[1:], rng.randint(0, 3)):
            msg[field] = self.value(1)
        return msg

    def nested(self) -> Any:
        depth = self.rng.randint(10, 60)
        value: Any = self.rng.choice([[], {}, "x", 1])
        for _ in range(depth):
            value = [value] if self.rng.random() < 0.5 else {"type": "ping", "n": value}
        return value

    def native_frame(self) -> str | bytes:
        """One frame, under the 4 KiB message limit (a bigger one closes, by contract)."""
        while True:
            frame = self._native_frame()
            if len(frame if isinstance(frame, bytes) else frame.encode()) < 3500:
                return frame

    def sio_event(self) -> tuple[str, Any]:
        while True:
            event, payload = self._sio_event()
            if isinstance(payload, bytes) or len(json.dumps(payload)) < 3500:
                return event, payload

    def _native_frame(self) -> str | bytes:
        rng = self.rng
        pick = rng.random()
        if pick < 0.1:
            return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        if pick < 0.2:
            broken = json.dumps(self.message(), ensure_ascii=False)
            return broken[: rng.randint(0, max(0, len(broken) - 1))]
        if pick < 0.25:
            return json.dumps(self.nested())
        if pick < 0.3:
            return rng.choice(["null", "[]", "{}", '""', "1e999", "-", "NaN", "\ufeff{}", "{}{}"])
        return json.dumps(self.message(), ensure_ascii=rng.random() < 0.5)

    def _sio_event(self) -> tuple[str, Any]:
        rng = self.rng
        event = rng.choice(TYPES) if rng.random() < 0.7 else self.text() or "x"
        if event in ("connect", "disconnect", "connect_error", "message"):
            event = "ping"
        pick = rng.random()
        if pick < 0.1:
            payload: Any = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        elif pick < 0.2:
            payload = self.nested()
        else:
            payload = self.message() if rng.random() < 0.6 else self.value()
        return event, payload

    def engineio_packet(self) -> str:
        """Raw Socket.IO packets, valid and not (under 4 KiB), inside well-formed Engine.IO
        message packets: an Engine.IO packet of an unknown type (or an empty frame) makes
        python-engineio drop the sender's own session, which is the protocol's answer; a
        BINARY_ACK announcing no attachment ("46") wedges python-socketio's parser for the
        sender's own session (every later packet is refused as an unexpected attachment),
        so it is left out too: neither harms anybody else."""
        while True:
            packet = self._engineio_packet()
            if len(packet.encode()) < 3500:
                return packet

    def _engineio_packet(self) -> str:
        rng = self.rng
        return rng.choice(
            [
                "42" + json.dumps([rng.choice(TYPES), self.value()]),
                "42" + json.dumps(self.value()),
                "42" + "[" * rng.randint(100, 2000),
                "42garbage",
                '42["ping"',
                "42[]",
                "42[1,2]",
                '42["ping",{},{},{}]',
                '43["x"]',
                "431[]",
                "44",
                "4",
                "49",
                "6",
                '451-["ping",{"_placeholder":true,"num":0}]',
                "4" + self.text(),
            ]
        )


async def paced(frames: int, send: Any) -> None:
    for n in range(frames):
        await send(n)
        await asyncio.sleep(PACE)


async def still_serving(client: Recorder, label: str) -> None:
    assert not client.closed, f"{label}: the connection was closed (seed {SEED})"
    pong = await client.ping()
    assert pong["type"] == "pong", f"{label}: {pong} (seed {SEED})"


async def test_fuzz_every_transport_while_another_client_is_served(
    server: Server, http: Any, tokens: Tokens, sio_client: Any, native_client: Any
) -> None:
    fuzz = Fuzz(SEED)
    # The bystander: bob, subscribed to his own job, which runs through the fuzzing.
    bystander = await native_client(tokens.bob)
    job_id = await start_job(http, tokens.bob, topic="through the storm", sections=6,
                             secondsPerSection=0.5)  # fmt: skip
    await bystander.request("subscribe_job", jobId=job_id)

    native = await native_client(tokens.alice)
    over_ws = await sio_client(tokens.alice, transports=["websocket"])
    over_polling = await sio_client(tokens.make("fuzz-polling"), transports=["polling"])
    native_frames = [fuzz.native_frame() for _ in range(FRAMES)]
    sio_events = [fuzz.sio_event() for _ in range(2 * FRAMES)]
    raw_packets = [fuzz.engineio_packet() for _ in range(FRAMES)]

    async def to_native(n: int) -> None:
        await native.ws.send(native_frames[n])

    async def to_sio(client: SioClient, offset: int) -> Any:
        async def send(n: int) -> None:
            event, payload = sio_events[offset + n]
            await client.sio.emit(event, payload)

        return send

    async with websockets.connect(f"{server.ws_url}{EIO_PATH}?EIO=4&transport=websocket") as raw:
        opened = await raw.recv()
        assert isinstance(opened, str) and opened.startswith("0")
        await raw.send("40" + json.dumps({"token": tokens.make("fuzz-raw")}))
        raw_seen: list[str] = []

        async def read_raw() -> None:
            async for packet in raw:
                raw_seen.append(str(packet))
                if packet == "2":
                    await raw.send("3")

        reader = asyncio.create_task(read_raw())

        async def to_raw(n: int) -> None:
            await raw.send(raw_packets[n])

        try:
            await asyncio.gather(
                paced(FRAMES, to_native),
                paced(FRAMES, await to_sio(over_ws, 0)),
                paced(FRAMES, await to_sio(over_polling, FRAMES)),
                paced(FRAMES, to_raw),
            )
            for _ in range(5):  # a withheld binary attachment may swallow one packet
                await raw.send('42["ping",{}]')
                for _ in range(20):
                    if any('"pong"' in p for p in raw_seen):
                        break
                    await asyncio.sleep(0.05)
            assert any('"pong"' in p for p in raw_seen), (
                f"raw Socket.IO session stopped answering (seed {SEED}): {raw_seen[-5:]}"
            )
        finally:
            reader.cancel()

    for label, client in (("native", native), ("websocket", over_ws), ("polling", over_polling)):
        await still_serving(client, label)
        errors = client.of_type("error")
        assert errors, f"{label}: no error answered any garbage (seed {SEED})"
        codes = {e["code"] for e in errors}
        documented = {"bad_request", "forbidden", "job_not_found", "channel_not_found",
                      "invalid_token", "too_many_subscriptions"}  # fmt: skip
        assert codes <= documented, f"{label}: undocumented codes {codes - documented}"
        assert all(isinstance(e["message"], str) and e["message"] for e in errors)
    assert not any(isinstance(c, NativeClient) and c.close_code for c in (native,))

    outcome = await bystander.wait_for(is_terminal(job_id), within=30, what="bob's job outcome")
    assert outcome["type"] == "job_completed", outcome
    progress = [m for m in bystander.for_job(job_id) if m["type"] == "job_status_update"]
    assert len(progress) >= 3, "bob's progress stopped arriving during the fuzzing"
    await still_serving(bystander, "bystander")


# --- inputs with a known bug on the native endpoint: each on its own


async def expect_bad_request(client: NativeClient, frame: str) -> None:
    start = client.mark()
    await client.send_raw(frame)
    error = await client.wait_for(is_type("error"), after=start, what="an error answer")
    assert error["code"] == "bad_request", error
    await still_serving(client, repr(frame[:40]))


@pytest.mark.parametrize("depth", [1200, 4000])
async def test_native_deeply_nested_json(native_client: Any, tokens: Tokens, depth: int) -> None:
    """Nesting deeper than Python's recursion limit (within the 4 KiB message limit)."""
    client = await native_client(tokens.alice)
    await expect_bad_request(client, "[" * depth + "]" * depth if depth < 2000 else "[" * depth)


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "\\ud800"}',  # a lone surrogate as the message type
        '{"type": "subscribe_job", "jobId": "\\udfff"}',  # ... as a job id
    ],
)
async def test_native_lone_surrogates(native_client: Any, tokens: Tokens, frame: str) -> None:
    """JSON may escape a lone surrogate; it is not text and must be refused as bad input,
    not crash the answer (or the connection)."""
    client = await native_client(tokens.alice)
    await expect_bad_request(client, frame)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_socketio_lone_surrogate_job_id(
    sio_client: Any, tokens: Tokens, transport: str
) -> None:
    client = await sio_client(tokens.alice, transports=[transport])
    start = client.mark()
    await client.sio.emit("subscribe_job", {"jobId": "\udfff"})
    error = await client.wait_for(is_type("error"), after=start, what="an error answer")
    assert error["code"] == "bad_request", error
    await still_serving(client, transport)


# --- REST bodies


ADMIN_BODIES = [
    ("/api/v1/websocket/broadcast/system", {"message": 5}, "message"),
    ("/api/v1/websocket/broadcast/system", {"message": ["x"]}, "message"),
    ("/api/v1/websocket/broadcast/system", {"message": ""}, "message"),
    ("/api/v1/websocket/broadcast/system", {"message": "x" * 2001}, "message"),
    ("/api/v1/websocket/broadcast/system", {"message": "x", "level": "loud"}, "level"),
    ("/api/v1/websocket/broadcast/system", {"message": "x", "level": None}, "level"),
    ("/api/v1/websocket/broadcast/system", {"message": "x", "admin": True}, "admin"),
    ("/api/v1/websocket/broadcast/system", {}, "message"),
    ("/api/v1/websocket/broadcast/maintenance", {"message": "x", "startsAt": "soon"}, "startsAt"),
    ("/api/v1/websocket/broadcast/maintenance", {"message": "x", "startsAt": 1.5}, "startsAt"),
    ("/api/v1/websocket/broadcast/maintenance", {"message": "x", "startsAt": -1}, "startsAt"),
    (
        "/api/v1/websocket/broadcast/maintenance",
        {"message": "x", "durationMinutes": -1},
        "durationMinutes",
    ),
    (
        "/api/v1/websocket/broadcast/maintenance",
        {"message": "x", "durationMinutes": 10**30},
        "durationMinutes",
    ),
    ("/api/v1/jobs", {"topic": "x", "sections": 10**30}, "sections"),
    ("/api/v1/jobs", {"topic": ["x"]}, "topic"),
    ("/api/v1/jobs", {"topic": "x" * 201}, "topic"),
    ("/api/v1/jobs", {"topic": "x", "secondsPerSection": "nan"}, "secondsPerSection"),
    ("/api/v1/jobs", {"topic": "x", "secondsPerSection": "inf"}, "secondsPerSection"),
    ("/api/v1/jobs", {"topic": "x", "failAtSection": "first"}, "failAtSection"),
]


async def test_rest_bodies_of_the_wrong_shape(
    http: Any, tokens: Tokens, native_client: Any, sio_client: Any
) -> None:
    watcher = await native_client(tokens.bob)
    other = await sio_client(tokens.alice, transports=["polling"])
    for path, body, field in ADMIN_BODIES:
        response = await http.post(path, json=body, headers=bearer(tokens.admin))
        assert response.status_code == 422, (path, body, response.text)
        answer = response.json()
        assert answer["code"] == "validation_error", answer
        assert field in answer["message"], (body, answer)
        assert any(field in e["field"] for e in answer["errors"]), answer

    raw_bodies = ["{", "[]", '"text"', "null", "{" * 3000, "\x00\x01", '{"message": "\\ud800"}']
    for path in ("/api/v1/websocket/broadcast/system", "/api/v1/jobs"):
        for raw in raw_bodies:
            response = await http.post(
                path,
                content=raw.encode("utf-8", "surrogatepass"),
                headers={**bearer(tokens.admin), "Content-Type": "application/json"},
            )
            # 422 (validation) or 400 (a body that cannot even be parsed); never a 5xx.
            assert response.status_code in (400, 422), (path, raw[:20], response.text)
            assert response.json()["code"] in ("validation_error", "bad_request")

    for path, params, field in [
        ("/api/v1/jobs", {"limit": "many"}, "limit"),
        ("/api/v1/jobs", {"limit": "0"}, "limit"),
        ("/api/v1/jobs", {"limit": str(10**30)}, "limit"),
    ]:
        response = await http.get(path, params=params, headers=bearer(tokens.alice))
        assert response.status_code == 422 and field in response.json()["message"], response.text
    cancel = await http.delete(
        "/api/v1/jobs/whatever", params={"terminate": "maybe"}, headers=bearer(tokens.alice)
    )
    assert cancel.status_code == 422 and "terminate" in cancel.json()["message"], cancel.text

    # Nothing of it reached anybody; the API and the sockets still work.
    sent = await http.post(
        "/api/v1/websocket/broadcast/system",
        json={"message": "after the bad bodies"},
        headers=bearer(tokens.admin),
    )
    assert sent.status_code == 200, sent.text
    for client in (watcher, other):
        await client.wait_for_type("system_notification", message="after the bad bodies")
        await still_serving(client, "REST bystander")
        notes = [m for m in client.messages if m["type"].endswith("_notification")]
        assert len(notes) == 1, notes
