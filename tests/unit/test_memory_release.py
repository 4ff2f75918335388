"""A notifier hands memory it freed back to the system (``service.release_free_memory``,
run after the full collection that follows a wave of closed connections): what was freed
below the heap's top leaves the process's RSS, instead of staying as the high-water mark
of its busiest moment.

The check runs in a process of its own, whose heap it shapes: many blocks freed below one
that stays allocated, which ``free()`` alone never returns (only the heap's top is). jobcast
runs on Linux with glibc (the images, CI): elsewhere this test fails, as it should, since
the notifier would keep its high-water mark there.
"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, os
from notifier.core.service import release_free_memory

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

# 64 MiB in 100 KiB blocks (under glibc's mmap threshold: from the heap), then a block that
# stays, above them, so that freeing the others cannot shrink the heap from its top.
blocks = [bytearray(100 * 1024) for _ in range(640)]
keep = bytearray(100 * 1024)
peak = rss_mib()
del blocks
freed = rss_mib()
released = release_free_memory()
after = rss_mib()
print(json.dumps({"peak": peak, "freed": freed, "released": released, "after": after}))
"""


def test_memory_freed_below_the_heaps_top_leaves_the_rss() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    figures = json.loads(out)
    # free() alone keeps it: the blocks lay below one still allocated.
    assert figures["freed"] > figures["peak"] - 16, figures
    assert figures["released"] is True, figures
    assert figures["after"] < figures["freed"] - 48, figures
