"""api/static/jobcast-client.d.ts: the TypeScript declarations of the browser client.

``tsc`` (npm's ``typescript``, pinned in package-lock.json, installed by ``make web``)
type-checks tests/support/ts/usage.ts under ``--strict`` (it must pass) and
tests/support/ts/wrong.ts (each line marked ``// @expect TSnnnn`` must fail with exactly
that error, and nothing else may): wrong field names, message types and codes fail. Nothing
is emitted. Without Node or ``node_modules`` these tests are skipped, except under CI
(``CI`` set), where they fail: ``make test`` runs ``make web`` first.

The other tests need no Node: they check that the declarations keep up with the code
(every export and public member of jobcast-client.js, every message type the server sends).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.support.env import REPO, missing_tool

TS_DIR = REPO / "tests" / "support" / "ts"
TSC = REPO / "node_modules" / ".bin" / "tsc"
CLIENT_JS = REPO / "api" / "static" / "jobcast-client.js"
CLIENT_DTS = REPO / "api" / "static" / "jobcast-client.d.ts"
#: ``file(line,col): error TSnnnn: ...`` (``--pretty false``).
DIAGNOSTIC = re.compile(r"^(?P<file>[^()\s]+)\((?P<line>\d+),\d+\): error (?P<code>TS\d+):", re.M)
EXPECT = re.compile(r"//\s*@expect\s+(TS\d+)\s*$")


def _tsc() -> Path:
    """The locked tsc, or skip (outside CI) / fail (under CI) saying what is missing."""
    missing = None
    if shutil.which("node") is None:
        missing = "node is not on PATH (install Node.js and npm, then: make web)"
    elif not TSC.exists():
        missing = f"{TSC.relative_to(REPO)} is missing (run: make web)"
    if missing is not None:
        missing_tool(missing)
    return TSC


def _run_tsc(project: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_tsc()), "--noEmit", "--strict", "--pretty", "false", "-p", str(TS_DIR / project)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_usage_type_checks() -> None:
    done = _run_tsc("tsconfig.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert DIAGNOSTIC.search(done.stdout) is None, done.stdout


def test_wrong_field_names_fail_with_the_expected_errors() -> None:
    source = (TS_DIR / "wrong.ts").read_text()
    expected = {
        (number, match[1])
        for number, line in enumerate(source.splitlines(), start=1)
        if (match := EXPECT.search(line))
    }
    assert len(expected) >= 10, "wrong.ts lost its marked mistakes"
    assert {"TS2551", "TS2339"} <= {code for _, code in expected}
    done = _run_tsc("tsconfig.wrong.json")
    assert done.returncode != 0, "tsc accepted wrong.ts"
    found = set()
    for diagnostic in DIAGNOSTIC.finditer(done.stdout):
        assert diagnostic["file"].endswith("tests/support/ts/wrong.ts"), done.stdout
        found.add((int(diagnostic["line"]), diagnostic["code"]))
    assert found == expected, (
        f"missing {sorted(expected - found)}, unexpected {sorted(found - expected)}\n" + done.stdout
    )


def test_no_emitted_files() -> None:
    emitted = [p for p in TS_DIR.iterdir() if p.suffix == ".js" or p.name.endswith(".tsbuildinfo")]
    assert emitted == []


# --- the declarations keep up with the code (no Node needed)


def _block(text: str, opening: str) -> str:
    """The body of the first ``{ ... }`` after ``opening``."""
    start = text.index("{", text.index(opening)) + 1
    depth, index = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        index += 1
    return text[start : index - 1]


def test_every_export_of_the_client_is_declared() -> None:
    js = CLIENT_JS.read_text()
    dts = CLIENT_DTS.read_text()
    exported = set(re.findall(r"^export (?:async )?(?:const|function|class) (\w+)", js, re.M))
    declared = set(re.findall(r"^export declare (?:const|function|class) (\w+)", dts, re.M))
    assert exported == declared


def test_every_public_member_of_the_client_is_declared() -> None:
    js = _block(CLIENT_JS.read_text(), "export class JobcastClient {")
    dts = _block(CLIENT_DTS.read_text(), "export declare class JobcastClient<")
    methods = re.findall(r"^  (?:async |get )?([a-zA-Z]\w*)\(", js, re.M)
    fields = re.findall(r"^    this\.([a-zA-Z]\w*) =", js, re.M)
    public = set(methods + fields) - {"constructor", "if", "for"}
    declared = set(re.findall(r"^  (?:readonly )?([a-zA-Z]\w*)[<(:]", dts, re.M)) - {"constructor"}
    assert public == declared


def _server_message_types() -> set[str]:
    """Every ``"type"`` the notifier puts in a message: literals, or module constants."""
    constants: dict[str, str] = {}
    sources = [path.read_text() for path in sorted((REPO / "notifier").rglob("*.py"))]
    for text in sources:
        constants.update(re.findall(r'^([A-Z][A-Z_]*) = "([a-z_]+)"$', text, re.M))
    types = set()
    for text in sources:
        for literal, name in re.findall(r'"type": (?:"([a-z_]+)"|([A-Z][A-Z_]*)\b)', text):
            types.add(literal or constants[name])
    return types


def test_every_server_message_type_is_declared() -> None:
    body = _block(CLIENT_DTS.read_text(), "export interface ServerMessageMap {")
    declared = set(re.findall(r"^  (\w+): \w+;", body, re.M))
    sent = _server_message_types()
    assert {"job_status_update", "session_expired", "pong"} <= sent  # the scan finds them
    assert sent == declared, (
        f"not declared in {CLIENT_DTS.relative_to(REPO)}: {sorted(sent - declared)}; "
        f"declared but never sent: {sorted(declared - sent)}"
    )
