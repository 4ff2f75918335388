"""The Lua scripts jobcast runs in Redis, kept as ``lua/<name>.lua`` beside this module.

A script that shares functions with others is made of several files, the shared one first:
``source("canvas_aggregate", "canvas_progress")``. Each file's header says what it does,
and its KEYS and ARGV.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def source(*names: str) -> str:
    """The text of ``lua/<name>.lua`` for each of ``names``, joined in order."""
    folder = files("notifier.contract") / "lua"
    return "".join((folder / f"{name}.lua").read_text(encoding="utf-8") for name in names)
