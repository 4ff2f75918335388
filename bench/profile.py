"""Summarise a py-spy profile recorded with ``--profile`` (collapsed stacks, ``--format raw``).

    .venv/bin/python -m bench.profile bench/results/<stamp>-profiles/W2-r3-jobcast-1234.txt

Prints where the samples went: by function (self and inclusive) and by area of the code
(jobcast's own modules, python-socketio/engineio, the websocket library, redis-py, ...).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

AREAS = [
    ("jobcast notifier", re.compile(r"\(notifier/|/notifier/")),
    ("jobcast api", re.compile(r"\(api/|/api/")),
    ("python-socketio", re.compile(r"socketio/")),
    ("python-engineio", re.compile(r"engineio/")),
    ("websockets", re.compile(r"websockets/")),
    ("uvicorn", re.compile(r"uvicorn/")),
    ("redis-py", re.compile(r"redis/|_parsers/|commands/core")),
    ("json", re.compile(r"json/")),
    ("logging", re.compile(r"logging/")),
    ("prometheus", re.compile(r"prometheus_client/")),
    ("asyncio (Python part)", re.compile(r"asyncio/(?!runners)")),
    ("event loop (uvloop, C: I/O, callbacks)", re.compile(r"asyncio/runners")),
]


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"
    m = re.match(r"(.*) \((.*?):?\d*\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    parts = path.rstrip(":").split("/")
    return f"{func} ({'/'.join(parts[-2:])})"


def _area(frame: str) -> str | None:
    for name, pattern in AREAS:
        if pattern.search(frame):
            return name
    return None


def summarise(path: Path, top: int = 25) -> str:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_time[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += count
        # the innermost frame that belongs to a known area gets the sample
        area = next((a for a in map(_area, reversed(frames)) if a), "other")
        areas[area] += count
    if not total:
        return f"{path}: no samples"
    out = [f"{path}: {total} samples", "", "by area (innermost known frame):"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in areas.most_common()]
    out += ["", f"top {top} by self time:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in self_time.most_common(top)]
    out += ["", f"top {top} inclusive:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(summarise(Path(arg)))
        print()
