"""JWT verification (no processes): what is accepted, and the code of every refusal."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from notifier.contract.settings import Settings
from notifier.edge.auth import AuthError, Principal, TokenVerifier, mint_token, token_from
from tests.support import hostile_helpers as hostile

SECRET = "unit-test-secret-" + "s" * 47  # 64 bytes: no InsecureKeyLengthWarning, even HS512
OTHER_SECRET = "another-unit-test-secret-" + "o" * 39


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"jwt_secret": SECRET, "jwt_issuer": None, "jwt_audience": None}
    values.update(overrides)
    return Settings(_env_file=None, **values)


def verifier(**overrides: Any) -> TokenVerifier:
    return TokenVerifier(settings(**overrides))


def encode(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "42", "iat": now, "exp": now + 600, **extra}


def refusal(token: str | None, **overrides: Any) -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier(**overrides).verify(token)
    return info.value


def test_good_token() -> None:
    principal = verifier().verify(mint_token(SECRET, "42", username="ann", ttl_seconds=60))
    assert principal.user_id == "42"
    assert principal.sub == "42"
    assert principal.username == "ann"
    assert principal.roles == ()
    assert not principal.is_admin
    assert principal.expires_at > time.time()


def test_numeric_sub_keeps_its_type_and_compares_as_string() -> None:
    principal = verifier().verify(encode(claims(sub=1)))
    assert principal.sub == 1 and isinstance(principal.sub, int)
    assert principal.user_id == "1"
    assert principal.may_see("1")
    assert not principal.may_see("2")


def test_email_is_the_username_fallback() -> None:
    assert verifier().verify(encode(claims(email="a@example.com"))).username == "a@example.com"


@pytest.mark.parametrize("roles", [["ADMIN"], ["ROLE_ADMIN"], ["USER", "ADMIN"], "ADMIN"])
def test_admin_roles(roles: Any) -> None:
    principal = verifier().verify(encode(claims(roles=roles)))
    assert principal.is_admin
    assert principal.may_see("someone-else")


@pytest.mark.parametrize("roles", [[], ["USER"], ["admin"], ["ROLE_USER"]])
def test_other_roles_are_not_admin(roles: list[str]) -> None:
    principal = verifier().verify(encode(claims(roles=roles)))
    assert not principal.is_admin
    assert not principal.may_see("someone-else")


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token(token: str | None) -> None:
    assert refusal(token).code == "auth_required"


def test_expired() -> None:
    error = refusal(mint_token(SECRET, "42", ttl_seconds=-3600))
    assert error.code == "token_expired"
    assert error.message == "Token expired"


def test_expiry_within_leeway_is_accepted() -> None:
    now = int(time.time())
    assert verifier().verify(encode(claims(exp=now - 2))).user_id == "42"  # leeway 10 s
    assert refusal(encode(claims(exp=now - 2)), jwt_leeway_seconds=0).code == "token_expired"


def test_exp_is_required() -> None:
    token = encode({"sub": "42", "iat": int(time.time())})
    assert refusal(token).code == "invalid_token"


def test_nbf_in_the_future() -> None:
    assert refusal(encode(claims(nbf=int(time.time()) + 3600))).code == "invalid_token"


def test_bad_signature() -> None:
    assert refusal(mint_token(OTHER_SECRET, "42")).code == "invalid_token"


def test_tampered_payload() -> None:
    header, _, signature = mint_token(SECRET, "42").split(".")
    forged_payload = encode(claims(sub="1", roles=["ADMIN"])).split(".")[1]
    assert refusal(f"{header}.{forged_payload}.{signature}").code == "invalid_token"


def test_none_algorithm_is_refused() -> None:
    unsigned = jwt.encode(claims(roles=["ADMIN"]), key=None, algorithm="none")
    assert refusal(unsigned).code == "invalid_token"


def test_algorithm_not_configured_is_refused() -> None:
    token = encode(claims(), algorithm="HS512")
    assert refusal(token).code == "invalid_token"
    assert verifier(jwt_algorithms=["HS256", "HS512"]).verify(token).user_id == "42"


def test_none_cannot_be_configured() -> None:
    with pytest.raises(ValidationError, match="none"):
        settings(jwt_algorithms=["none"])
    with pytest.raises(ValidationError):
        settings(jwt_algorithms="HS256,none")


def test_placeholder_secret_fails_at_start() -> None:
    with pytest.raises(RuntimeError, match="JOBCAST_JWT_SECRET"):
        verifier(jwt_secret="changeme")


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", "x" * 9000])
def test_malformed(token: str) -> None:
    assert refusal(token).code == "invalid_token"


@pytest.mark.parametrize("sub", [None, "", True, 1.5, ["1"], {"id": 1}])
def test_missing_or_malformed_sub(sub: Any) -> None:
    body = claims()
    if sub is None:
        del body["sub"]
    else:
        body["sub"] = sub
    assert refusal(encode(body)).code == "invalid_token"


def test_roles_must_be_a_list() -> None:
    assert refusal(encode(claims(roles={"ADMIN": True}))).code == "invalid_token"


def test_issuer_and_audience_when_configured() -> None:
    strict = {"jwt_issuer": "https://issuer.example", "jwt_audience": "jobcast"}
    good = encode(claims(iss="https://issuer.example", aud="jobcast"))
    assert verifier(**strict).verify(good).user_id == "42"
    for token in (
        encode(claims(iss="https://evil.example", aud="jobcast")),
        encode(claims(iss="https://issuer.example", aud="other")),
        encode(claims(aud="jobcast")),  # no iss
        encode(claims(iss="https://issuer.example")),  # no aud
    ):
        assert refusal(token, **strict).code == "invalid_token"


def test_issuer_and_audience_ignored_when_not_configured() -> None:
    token = encode(claims(iss="https://anyone.example", aud="whatever"))
    assert verifier().verify(token).user_id == "42"


def test_token_from_looks_in_order_auth_header_query() -> None:
    headers = {"authorization": "Bearer from-header"}
    assert token_from({"token": "from-auth"}, headers, "token=from-query") == "from-auth"
    assert token_from({"token": ""}, headers, "token=from-query") == "from-header"
    assert token_from(None, {"authorization": "Basic abc"}, "token=from-query") == "from-query"
    assert token_from(None, {"authorization": "bearer  spaced "}, "") == "spaced"
    assert token_from(None, None, "a=1&token=q&b=2") == "q"
    assert token_from("not-a-mapping", {}, "") is None
    assert token_from(None, {}, "token=") is None


def test_principal_is_plain_data() -> None:
    principal = Principal("7", 7, None, ("ROLE_ADMIN",), float("inf"))
    assert principal.is_admin
    assert principal.may_see("anyone")


def test_hs_rs_confusion_with_both_algorithms_configured() -> None:
    """Even a misconfiguration listing HS256 next to RS256 does not let the public key act
    as an HMAC secret (PyJWT refuses PEM material as an HMAC key)."""
    pair = hostile.rsa_keys()
    settings = Settings(
        _env_file=None,
        jwt_algorithms=["RS256", "HS256"],
        jwt_public_key=pair.public_pem,
        jwt_issuer=None,
        jwt_audience=None,
    )
    verifier = TokenVerifier(settings)
    forged = hostile.hs256_with_key_material(hostile.claims(1, roles=["ADMIN"]), pair.public_pem)
    with pytest.raises(AuthError) as info:
        verifier.verify(forged)
    assert info.value.code == "invalid_token"
    genuine = hostile.sign(hostile.claims(1), pair.private_pem, "RS256")
    assert verifier.verify(genuine).user_id == "1"
