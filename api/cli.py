"""The ``jobcast`` command line.

    jobcast token [--sub 1] [--username NAME] [--roles ADMIN,...] [--ttl 3600]

prints a signed development JWT for the configured ``JOBCAST_JWT_SECRET`` (and
``JOBCAST_JWT_ISSUER`` / ``JOBCAST_JWT_AUDIENCE`` when they are set).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from notifier.auth import mint_token
from notifier.settings import Settings, get_settings


class TokenError(Exception):
    """No token can be minted with this configuration."""


def parse_sub(value: str) -> str | int:
    """``sub`` as a number when it looks like one: ``userId`` keeps the token's type."""
    return int(value) if value.isdigit() else value


def dev_token(
    settings: Settings,
    sub: str | int,
    *,
    username: str | None = None,
    roles: Sequence[str] = (),
    ttl_seconds: float = 3600,
    secret: str | None = None,
) -> str:
    """A token the server configured by ``settings`` accepts.

    Signed with ``secret`` or, by default, the configured ``JOBCAST_JWT_SECRET``, with the
    first HMAC algorithm of ``JOBCAST_JWT_ALGORITHMS``; carries ``iss``/``aud`` when the
    server checks them.
    """
    algorithm = next((alg for alg in settings.jwt_algorithms if alg.upper().startswith("HS")), None)
    if algorithm is None:
        raise TokenError(
            "JOBCAST_JWT_ALGORITHMS="
            + ",".join(settings.jwt_algorithms)
            + " has no HMAC algorithm (HS256/HS384/HS512): sign tokens with your private key"
        )
    if secret is None:
        try:
            secret = settings.verification_key()
        except RuntimeError as exc:
            raise TokenError(str(exc)) from exc
    claims: dict[str, Any] = {}
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return mint_token(
        secret,
        sub,
        roles=list(roles) or None,
        username=username,
        ttl_seconds=ttl_seconds,
        algorithm=algorithm,
        **claims,
    )


def _token(args: argparse.Namespace) -> int:
    roles = [role.strip() for role in (args.roles or "").split(",") if role.strip()]
    try:
        token = dev_token(
            get_settings(),
            parse_sub(args.sub),
            username=args.username,
            roles=roles,
            ttl_seconds=args.ttl,
        )
    except TokenError as exc:
        print(f"jobcast token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobcast", description="jobcast: live progress of Celery jobs."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    token = commands.add_parser(
        "token",
        help="print a signed development JWT",
        description="Print a JWT signed with JOBCAST_JWT_SECRET (for development and demos).",
    )
    token.add_argument("--sub", default="1", help="the user id (default: 1)")
    token.add_argument("--username", default=None, help="the username claim")
    token.add_argument("--roles", default="", help="comma-separated roles, e.g. ADMIN")
    token.add_argument(
        "--ttl", type=_positive, default=3600.0, help="lifetime in seconds (default: 3600)"
    )
    token.set_defaults(handler=_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
