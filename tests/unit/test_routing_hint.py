"""The routing hint ``uid`` (SPEC section 10) and the per-address failure limit: pure logic.

Clients read the hint from their token without verifying it; the server compares it with
the verified user only to count it (``jobcast_routing_hints_total``). Failed
authentications are counted per client address; past the burst that address is refused.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest
from pydantic import ValidationError

from notifier.client import JobcastClient
from notifier.contract.endpoints import routing_hint, with_routing_hint
from notifier.contract.settings import Settings
from notifier.edge.auth import AuthError, Gate, Peer, TokenVerifier, mint_token
from notifier.edge.limits import AddressLimits
from tests.support.env import REPO, missing_tool

SECRET = "unit-test-secret-" + "s" * 47


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"jwt_secret": SECRET, "jwt_issuer": None, "jwt_audience": None}
    return Settings(_env_file=None, **{**values, **overrides})


@pytest.mark.parametrize(
    ("sub", "hint"), [("alice", "alice"), (42, "42"), ("ünï-çødé", "ünï-çødé")]
)
def test_the_hint_is_the_tokens_sub_as_the_server_compares_it(sub: str | int, hint: str) -> None:
    token = mint_token(SECRET, sub)
    assert routing_hint(token) == hint
    principal = TokenVerifier(settings()).verify(token)
    assert Peer("127.0.0.1", routing_hint(token)).hint_verdict(principal) == "match"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.!!!.c", "a.bnVsbA.c", "a.WzFd.c"])
def test_no_hint_from_what_is_not_a_token(token: str) -> None:
    assert routing_hint(token) is None


def test_the_hint_goes_into_the_url_replacing_any() -> None:
    assert with_routing_hint("http://h:1", "a b/ü") == "http://h:1?uid=a%20b%2F%C3%BC"
    assert with_routing_hint("http://h:1/?x=1&uid=old", "new") == "http://h:1/?x=1&uid=new"
    assert with_routing_hint("http://h:1?x=1", None) == "http://h:1?x=1"


def test_the_python_client_sends_the_hint_unless_given_one() -> None:
    token = mint_token(SECRET, "bob")
    assert JobcastClient("http://127.0.0.1:1", token).uid == "bob"
    assert JobcastClient("http://127.0.0.1:1", token, uid="other").uid == "other"


def test_peer_reads_the_address_and_the_hint() -> None:
    assert Peer.of(("10.0.0.7", 5555), "token=x&uid=carol") == Peer("10.0.0.7", "carol")
    assert Peer.of(None, "") == Peer("", None)
    principal = TokenVerifier(settings()).verify(mint_token(SECRET, "carol"))
    assert Peer("a", None).hint_verdict(principal) == "missing"
    assert Peer("a", "mallory").hint_verdict(principal) == "mismatch"


def test_an_address_past_its_failure_burst_is_refused_whatever_it_sends() -> None:
    gate = Gate(
        TokenVerifier(settings()),
        settings(auth_failure_burst=3, auth_failure_rate_per_second=0.5),
    )
    good = mint_token(SECRET, "dave")
    guesser, neighbour = Peer("10.0.0.1"), Peer("10.0.0.2")
    codes = []
    for _ in range(4):
        with pytest.raises(AuthError) as info:
            gate.verify("not-a-token", guesser)
        codes.append(info.value.code)
    assert codes == ["invalid_token"] * 3 + ["rate_limited"]
    with pytest.raises(AuthError) as refused:
        gate.verify(good, guesser)  # even a good token, until the bucket refills
    assert refused.value.code == "rate_limited"
    assert refused.value.retry_after == 2  # one token per 2 s
    assert gate.verify(good, neighbour).user_id == "dave"  # another address is not affected


def test_address_limits_refill_and_forget_the_least_recent() -> None:
    limits = AddressLimits(rate=1.0, burst=2.0, max_keys=2)
    assert limits.blocked("a", now=10.0) == 0.0
    limits.failed("a", now=10.0)
    limits.failed("a", now=10.0)
    assert limits.blocked("a", now=10.0) == pytest.approx(1.0)
    assert limits.blocked("a", now=11.0) == 0.0  # a token is back
    limits.failed("b", now=11.0)
    limits.failed("c", now=11.0)  # "a" is forgotten past max_keys
    assert limits.blocked("a", now=11.0) == 0.0


@pytest.mark.parametrize("value", ["10.0.0.1, 10.1.0.0/16", "*", "::1,127.0.0.1"])
def test_trusted_proxies_take_addresses_networks_or_any(value: str) -> None:
    assert settings(trusted_proxies=value).trusted_proxies == value


def test_trusted_proxies_name_a_bad_entry() -> None:
    with pytest.raises(ValidationError, match="JOBCAST_TRUSTED_PROXIES: 'haproxy'"):
        settings(trusted_proxies="127.0.0.1,haproxy")


def test_the_browser_client_sends_the_hint() -> None:
    """jobcast-client.js under Node: the `query` it gives socket.io-client carries the
    token's sub (engine.io-client copies it into every request)."""
    node = shutil.which("node")
    if node is None:
        missing_tool("node is not on PATH (install Node.js)")
    script = """
import { JobcastClient, routingHint } from "CLIENT_URL";
const options = [];
// A socket whose every member is a no-op returning itself: only the options matter here.
const stub = new Proxy(function () {}, { get: () => stub, apply: () => stub });
const io = (url, opts) => { options.push(opts); return stub; };
const [numeric, text, garbage] = process.argv.slice(1);
new JobcastClient({ io, url: "http://127.0.0.1:1", token: numeric });
new JobcastClient({ io, url: "http://127.0.0.1:1", token: text, uid: "given" });
new JobcastClient({ io, url: "http://127.0.0.1:1", token: garbage });
console.log(JSON.stringify({
  queries: options.map((o) => o.query),
  hints: [routingHint(numeric), routingHint(text), routingHint(garbage)],
}));
""".replace("CLIENT_URL", (REPO / "api" / "static" / "jobcast-client.js").as_uri())
    tokens = [mint_token(SECRET, 7), mint_token(SECRET, "ünï"), "x.y.z"]
    done = subprocess.run(
        [node, "--input-type=module", "-e", script, *tokens],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "queries": [{"uid": "7"}, {"uid": "given"}, {}],
        "hints": ["7", "ünï", None],
    }
