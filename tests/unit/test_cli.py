"""The pieces of the ``jobcast`` console script: the progress bar, the ETA, exit statuses,
where the token and the URL come from. The commands against the real stack:
``tests/integration/cli/test_cli.py``."""

from __future__ import annotations

import io
import re

import pytest

from api import cli
from api.watch import ProgressBar, format_eta, render_bar, report_end


def test_render_bar_clamps_and_fills() -> None:
    assert render_bar(0, 10) == "[░░░░░░░░░░]   0%"
    assert render_bar(50, 10) == "[█████░░░░░]  50%"
    assert render_bar(100, 10, unicode=False) == "[##########] 100%"
    assert render_bar(140, 4, unicode=False) == "[####] 100%"
    assert render_bar(-5, 4, unicode=False) == "[----]   0%"


def test_format_eta() -> None:
    assert format_eta(None) == ""
    assert format_eta(0) == ""
    assert format_eta(True) == ""
    assert format_eta(0.2) == "ETA 1s"
    assert format_eta(42.4) == "ETA 42s"
    assert format_eta(125) == "ETA 2m05s"


def test_progress_bar_into_a_pipe_prints_one_line_per_change() -> None:
    out = io.StringIO()
    bar = ProgressBar(out)
    update = {"type": "job_status_update", "jobId": "j"}
    bar.update({"type": "subscribed", "jobId": "j"})  # not a job message: nothing drawn
    bar.update({**update, "data": {"status": "processing", "progress": 40, "etaSeconds": 3}})
    bar.update({**update, "data": {"status": "processing", "progress": 40, "etaSeconds": 3}})
    bar.update({"type": "job_completed", "jobId": "j", "result": {}})
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "40%" in lines[0] and "processing" in lines[0] and "ETA 3s" in lines[0]
    assert "100%" in lines[1] and "completed" in lines[1]
    assert "\r" not in out.getvalue()


def test_report_end_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    done = {"type": "job_completed", "result": {"title": "T", "success": True}}
    assert report_end(done) == 0
    failed = {"type": "job_error", "error": "Generation failed: x", "data": {"code": "task_failed"}}
    assert report_end(failed) == 1
    cancelled = {"type": "job_status_update", "data": {"status": "cancelled", "message": "Bye"}}
    assert report_end(cancelled) == 2
    out, err = capsys.readouterr()
    assert "completed: T" in out and '"success": true' in out
    assert "failed (task_failed): Generation failed: x" in err
    assert "cancelled: Bye" in err


def test_token_comes_from_option_then_environment_then_minted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import jwt

    args = cli.build_parser().parse_args(["stats", "--sub", "7"])
    monkeypatch.setenv("JOBCAST_TOKEN", "from-env")
    assert cli.resolve_token(args) == "from-env"
    args.token = "from-option"
    assert cli.resolve_token(args) == "from-option"
    args.token = None
    monkeypatch.delenv("JOBCAST_TOKEN")
    minted = cli.resolve_token(args, roles=["ADMIN"])
    claims = jwt.decode(minted, options={"verify_signature": False})
    assert claims["sub"] == 7 and claims["roles"] == ["ADMIN"]


def test_url_defaults_to_the_configured_port() -> None:
    args = cli.build_parser().parse_args(["watch", "job-1"])
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", args.url)
    assert args.transport == "websocket" and args.timeout is None


def test_output_is_written_above_the_bar_which_waits_for_a_line_end() -> None:
    out = io.StringIO()
    bar = ProgressBar(out)
    update = {"type": "job_status_update", "jobId": "j"}
    bar.update({**update, "data": {"status": "processing", "progress": 10}})
    bar.output("## Heading\n\nFirst words")
    bar.update({**update, "data": {"status": "processing", "progress": 50}})  # waits
    bar.output(" and the rest.\n\n")
    bar.output("A last line")
    bar.update({"type": "job_completed", "jobId": "j", "result": {}})
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[") and "10%" in lines[0], lines
    assert lines[1:5] == ["## Heading", "", "First words and the rest.", ""], lines
    assert "50%" in lines[5], "the held bar is drawn once the line ended"
    assert lines[6] == "A last line"
    assert "100%" in lines[7] and "completed" in lines[7] and len(lines) == 8, lines


def test_report_end_does_not_print_the_content_again(capsys: pytest.CaptureFixture[str]) -> None:
    done = {"type": "job_completed", "result": {"title": "T", "content": "x" * 5000}}
    assert report_end(done) == 0
    out, _ = capsys.readouterr()
    assert '"content": "<5000 characters, above>"' in out and "x" * 100 not in out
