"""The ``jobcast`` command line.

    jobcast token [--sub 1] [--username NAME] [--roles ADMIN,...] [--ttl 3600]
    jobcast submit --topic TOPIC [--sections 5] [--seconds-per-section 1.0]
                   [--fail-at-section N] [--watch]
    jobcast watch JOB_ID [--transport websocket|polling|auto] [--timeout SECONDS]
    jobcast stats [--json]

``token`` prints a signed development JWT for the configured ``JOBCAST_JWT_SECRET`` (and
``JOBCAST_JWT_ISSUER`` / ``JOBCAST_JWT_AUDIENCE`` when they are set).

``submit``, ``watch`` and ``stats`` talk to a running server: ``--url`` (default
``http://127.0.0.1:$JOBCAST_HTTP_PORT``) and ``--token`` (default ``$JOBCAST_TOKEN``, else
a token minted with ``JOBCAST_JWT_SECRET`` for ``--sub``, with the ADMIN role for
``stats``). ``submit`` prints the new job's id. ``watch`` follows a job with a live progress
bar (:class:`notifier.client.JobcastClient`: reconnects with ``lastEventId``, de-duplicates,
re-subscribes) and ends with its result or error; its exit status is 0 when the job
completed, 1 when it failed, 2 when it was cancelled or could not be followed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from notifier.contract.settings import Settings, get_settings

#: Exit status of a command that could not do its work (as argparse's usage errors).
EXIT_OTHER = 2
TRANSPORTS = {
    "websocket": ("websocket",),
    "polling": ("polling",),
    "auto": ("polling", "websocket"),
}
HTTP_TIMEOUT_SECONDS = 15.0


class TokenError(Exception):
    """No token can be minted with this configuration."""


class ApiCallError(Exception):
    """The server refused a request or could not be reached."""

    def __init__(self, message: str, code: str = "error", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def __str__(self) -> str:
        where = f"HTTP {self.status}, " if self.status else ""
        return f"{self.message} ({where}{self.code})"


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
    from notifier.edge.auth import mint_token  # PyJWT: the server extra

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


# --- talking to a server


def resolve_token(args: argparse.Namespace, roles: Sequence[str] = ()) -> str:
    """``--token``, else ``$JOBCAST_TOKEN``, else a token minted for ``--sub``."""
    token = args.token or os.environ.get("JOBCAST_TOKEN")
    if token:
        return str(token)
    return dev_token(get_settings(), parse_sub(args.sub), roles=roles, ttl_seconds=3600)


def api_call(
    base_url: str, method: str, path: str, token: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One REST call; the answer's JSON, or :class:`ApiCallError` with the server's code."""
    request = urllib.request.Request(
        base_url.rstrip("/") + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            **({"Content-Type": "application/json"} if body is not None else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"{}")
            return answer
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read() or b"{}")
        except ValueError:
            error = {}
        raise ApiCallError(
            str(error.get("message") or exc.reason), str(error.get("code") or "error"), exc.code
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApiCallError(f"cannot reach {base_url}: {reason}", "unreachable") from exc


def _fail(command: str, exc: Exception) -> int:
    print(f"jobcast {command}: {exc}", file=sys.stderr)
    return EXIT_OTHER


def _submit(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "topic": args.topic,
        "sections": args.sections,
        "secondsPerSection": args.seconds_per_section,
    }
    if args.fail_at_section is not None:
        body["failAtSection"] = args.fail_at_section
    try:
        token = resolve_token(args)
        answer = api_call(args.url, "POST", "/api/v1/jobs", token, body)
    except (TokenError, ApiCallError) as exc:
        return _fail("submit", exc)
    job_id = str(answer["data"]["jobId"])
    print(job_id, flush=True)
    if not args.watch:
        return 0
    return _follow(args, token, job_id)


def _watch(args: argparse.Namespace) -> int:
    try:
        token = resolve_token(args)
    except TokenError as exc:
        return _fail("watch", exc)
    return _follow(args, token, args.job_id)


def _follow(args: argparse.Namespace, token: str, job_id: str) -> int:
    from api.watch import follow

    # REST first: a refused token or an unknown job gets the server's own words.
    try:
        path = f"/api/v1/jobs/{urllib.parse.quote(job_id, safe='')}"
        job = api_call(args.url, "GET", path, token)["data"]
    except ApiCallError as exc:
        return _fail("watch", exc)
    print(f"job {job_id} ({job.get('status')}), following it live", flush=True)
    transports = TRANSPORTS[args.transport]
    try:
        return asyncio.run(follow(args.url, token, job_id, transports, args.timeout))
    except KeyboardInterrupt:
        print("\njobcast watch: interrupted", file=sys.stderr)
        return 130


def _stats(args: argparse.Namespace) -> int:
    try:
        token = resolve_token(args, roles=["ADMIN"])
        answer = api_call(args.url, "GET", "/api/v1/websocket/stats", token)
    except (TokenError, ApiCallError) as exc:
        return _fail("stats", exc)
    data = answer.get("data", {})
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows += [(f"{key}.{sub}", count) for sub, count in value.items()]
        else:
            rows.append((key, value))
    width = max((len(name) for name, _ in rows), default=0)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


# --- the parser


def _positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return number


def _server_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    default_url = f"http://127.0.0.1:{get_settings().http_port}"
    options.add_argument("--url", default=default_url, help=f"the server (default: {default_url})")
    options.add_argument(
        "--token",
        default=None,
        help="a JWT (default: $JOBCAST_TOKEN, else one minted with JOBCAST_JWT_SECRET)",
    )
    options.add_argument("--sub", default="1", help="user id of a minted token (default: 1)")
    return options


def _follow_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--transport",
        choices=sorted(TRANSPORTS),
        default="websocket",
        help="Socket.IO transport (default: websocket; auto: polling upgraded to websocket)",
    )
    options.add_argument(
        "--timeout", type=_positive, default=None, help="give up after this many seconds"
    )
    return options


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

    server, follow_options = _server_options(), _follow_options()
    submit = commands.add_parser(
        "submit",
        parents=[server, follow_options],
        help="start a content-generation job and print its id",
        description="POST /api/v1/jobs; prints the job id (with --watch, then follows it).",
    )
    submit.add_argument("--topic", required=True, help="what to write about")
    submit.add_argument("--sections", type=int, default=5, help="number of sections (default: 5)")
    submit.add_argument(
        "--seconds-per-section", type=float, default=1.0, help="seconds each (default: 1.0)"
    )
    submit.add_argument("--fail-at-section", type=int, default=None, help="fail there (demo)")
    submit.add_argument("--watch", action="store_true", help="then follow it like `watch`")
    submit.set_defaults(handler=_submit)

    watch = commands.add_parser(
        "watch",
        parents=[server, follow_options],
        help="follow a job with a live progress bar",
        description="Follow a job until it ends. Exit status: 0 completed, 1 failed, "
        "2 cancelled or not followed (unknown job, refused token, timeout).",
    )
    watch.add_argument("job_id", metavar="JOB_ID")
    watch.set_defaults(handler=_watch)

    stats = commands.add_parser(
        "stats",
        parents=[server],
        help="connection statistics (ADMIN)",
        description="GET /api/v1/websocket/stats (a minted token gets the ADMIN role).",
    )
    stats.add_argument("--json", action="store_true", help="print the JSON as the server sent it")
    stats.set_defaults(handler=_stats)

    migrate = commands.add_parser(
        "migrate-partitions",
        help="re-key jobcast's data for another JOBCAST_PARTITIONS (offline)",
        description="Move every job, job list, inbox and cursor to the partitions of --to, "
        "then record the new count (REDIS_URL, JOBCAST_REDIS_CLUSTER). Stop every jobcast "
        "process first; clients reload snapshots after it (docs/operations.md).",
    )
    migrate.add_argument("--to", type=int, required=True, help="the new partition count")
    migrate.set_defaults(handler=_migrate)
    return parser


def _migrate(args: argparse.Namespace) -> int:
    from api.migrate import main_migrate
    from notifier.contract.settings import get_settings
    from notifier.core.bus import sync_client

    client = sync_client(get_settings())
    try:
        return main_migrate(client, args.to)
    finally:
        client.close()


#: Top-level modules of the server extra that commands need (PyJWT, python-socketio).
SERVER_MODULES = frozenset({"jwt", "socketio", "engineio", "aiohttp"})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SERVER_MODULES:
            raise
        print(
            f"jobcast: this command needs the server extra ({exc.name} is not installed):"
            " pip install 'jobcast[server]'",
            file=sys.stderr,
        )
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
