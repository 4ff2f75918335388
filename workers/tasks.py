"""The content-generation task: works through sections and reports progress."""

from __future__ import annotations

import time
from typing import Any

from workers.app import app
from workers.progress import report


class GenerationError(RuntimeError):
    """A section could not be generated."""


@app.task(bind=True, name="jobcast.generate_content", soft_time_limit=3600, time_limit=3660)
def generate_content(
    self: Any,
    topic: str,
    sections: int = 5,
    seconds_per_section: float = 1.0,
    fail_at_section: int | None = None,
) -> dict[str, Any]:
    report(0, f"Outlining {topic!r}", sections=sections)
    for section in range(1, sections + 1):
        time.sleep(seconds_per_section)
        if fail_at_section == section:
            raise GenerationError(
                f"Generation failed: section {section} of {topic!r} could not be written"
            )
        report(
            section * 100 / sections, f"Writing section {section} of {sections}", section=section
        )
    return {
        "success": True,
        "contentId": f"content-{self.request.id}",
        "title": f"Generated Content: {topic}",
        "sections": sections,
    }
