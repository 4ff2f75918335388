"""The content-generation task: writes its sections a few words at a time, streaming the
text as it goes (the job's live output), and reports progress per section."""

from __future__ import annotations

import time
import zlib
from typing import Any

from workers.app import app
from workers.progress import report, stream

#: How many words go out per ``stream()`` call.
WORDS_PER_PIECE = 3

_WORDS = (
    "the", "a", "every", "its", "our", "readers", "writers", "system", "job", "queue",
    "progress", "text", "idea", "section", "draft", "shows", "keeps", "brings", "builds",
    "turns", "careful", "quick", "clear", "steady", "live", "simple", "useful", "into",
    "with", "from", "over", "through", "and", "while", "because", "each", "step", "story",
)  # fmt: skip


class GenerationError(RuntimeError):
    """A section could not be generated."""


def section_text(topic: str, section: int, sections: int) -> str:
    """The text of one section: a heading and a few sentences, the same for the same
    arguments (a stand-in for a model's output)."""
    seed = zlib.crc32(f"{topic}\0{section}".encode())
    sentences = []
    for n in range(3 + seed % 3):
        words = [_WORDS[(seed >> (k % 24) ^ (n * 31 + k * 7)) % len(_WORDS)] for k in range(9)]
        sentences.append(" ".join([words[0].capitalize(), *words[1:]]) + ".")
    heading = f"## Section {section} of {sections}: {topic}\n\n"
    return heading + " ".join(sentences) + "\n\n"


def content_text(topic: str, sections: int) -> str:
    """The whole text ``generate_content`` writes for these arguments (its result's
    ``content``), when it completes."""
    return "".join(section_text(topic, n, sections) for n in range(1, sections + 1))


def pieces(text: str, words: int = WORDS_PER_PIECE) -> list[str]:
    """``text`` cut after every ``words`` words (spaces and line breaks stay attached)."""
    out, start, count = [], 0, 0
    for index, char in enumerate(text):
        if char in " \n" and index + 1 < len(text) and text[index + 1] not in " \n":
            count += 1
            if count == words:
                out.append(text[start : index + 1])
                start, count = index + 1, 0
    if start < len(text):
        out.append(text[start:])
    return out


@app.task(bind=True, name="jobcast.generate_content", soft_time_limit=3600, time_limit=3660)
def generate_content(
    self: Any,
    topic: str,
    sections: int = 5,
    seconds_per_section: float = 1.0,
    fail_at_section: int | None = None,
) -> dict[str, Any]:
    report(0, f"Outlining {topic!r}", sections=sections)
    written: list[str] = []
    for section in range(1, sections + 1):
        if fail_at_section == section:
            time.sleep(seconds_per_section)
            raise GenerationError(
                f"Generation failed: section {section} of {topic!r} could not be written"
            )
        parts = pieces(section_text(topic, section, sections))
        for part in parts:  # the section's time, spread over its pieces
            time.sleep(seconds_per_section / len(parts))
            stream(part)
            written.append(part)
        report(
            section * 100 / sections, f"Writing section {section} of {sections}", section=section
        )
    return {
        "success": True,
        "contentId": f"content-{self.request.id}",
        "title": f"Generated Content: {topic}",
        "sections": sections,
        "content": "".join(written),
    }
