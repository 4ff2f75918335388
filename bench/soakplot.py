"""A PNG of the soak's curves with nothing but the standard library (zlib + struct): one
panel per curve, stacked, each with its title and its range written in a 3x5 pixel font,
the samples as a line and the warm-up end as a dotted vertical line."""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

RGB = tuple[int, int, int]

# 3x5 glyphs, rows top to bottom, 3 bits each (4 = left pixel)
_FONT: dict[str, tuple[int, ...]] = {
    "0": (7, 5, 5, 5, 7), "1": (2, 6, 2, 2, 7), "2": (7, 1, 7, 4, 7), "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1), "5": (7, 4, 7, 1, 7), "6": (7, 4, 7, 5, 7), "7": (7, 1, 1, 2, 2),
    "8": (7, 5, 7, 5, 7), "9": (7, 5, 7, 1, 7), ".": (0, 0, 0, 0, 2), "-": (0, 0, 7, 0, 0),
    "%": (5, 1, 2, 4, 5), "/": (1, 1, 2, 4, 4), ":": (0, 2, 0, 2, 0), " ": (0, 0, 0, 0, 0),
    "(": (1, 2, 2, 2, 1), ")": (4, 2, 2, 2, 4), "+": (0, 2, 7, 2, 0), "=": (0, 7, 0, 7, 0),
    "_": (0, 0, 0, 0, 7),
    ",": (0, 0, 0, 2, 4), "A": (2, 5, 7, 5, 5), "B": (6, 5, 6, 5, 6), "C": (7, 4, 4, 4, 7),
    "D": (6, 5, 5, 5, 6), "E": (7, 4, 6, 4, 7), "F": (7, 4, 6, 4, 4), "G": (7, 4, 5, 5, 7),
    "H": (5, 5, 7, 5, 5), "I": (7, 2, 2, 2, 7), "J": (1, 1, 1, 5, 7), "K": (5, 5, 6, 5, 5),
    "L": (4, 4, 4, 4, 7), "M": (5, 7, 7, 5, 5), "N": (6, 5, 5, 5, 5), "O": (7, 5, 5, 5, 7),
    "P": (7, 5, 7, 4, 4), "Q": (7, 5, 5, 7, 1), "R": (6, 5, 6, 5, 5), "S": (7, 4, 7, 1, 7),
    "T": (7, 2, 2, 2, 2), "U": (5, 5, 5, 5, 7), "V": (5, 5, 5, 5, 2), "W": (5, 5, 7, 7, 5),
    "X": (5, 5, 2, 5, 5), "Y": (5, 5, 2, 2, 2), "Z": (7, 1, 2, 4, 7),
}  # fmt: skip


class Canvas:
    def __init__(self, width: int, height: int, background: RGB = (255, 255, 255)) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def dot(self, x: int, y: int, color: RGB) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            at = (y * self.width + x) * 3
            self.pixels[at : at + 3] = bytes(color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: RGB) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for k in range(steps + 1):
            self.dot(round(x0 + (x1 - x0) * k / steps), round(y0 + (y1 - y0) * k / steps), color)

    def text(self, x: int, y: int, text: str, color: RGB, scale: int = 2) -> None:
        for ch in text.upper():
            rows = _FONT.get(ch, _FONT[" "])
            for r, bits in enumerate(rows):
                for c in range(3):
                    if bits & (4 >> c):
                        for dx in range(scale):
                            for dy in range(scale):
                                self.dot(x + c * scale + dx, y + r * scale + dy, color)
            x += 4 * scale

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * self.width * 3 : (y + 1) * self.width * 3])
            for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def _px(box: tuple[float, ...], t: float, v: float) -> tuple[int, int]:
    """Pixel of (t, v) in a panel's box (x_lo, x_hi, y_lo, y_hi, t_max, v_lo, v_hi)."""
    x_lo, x_hi, y_lo, y_hi, t_max, v_lo, v_hi = box
    return (
        round(x_lo + (x_hi - x_lo) * t / t_max),
        round(y_hi - (y_hi - y_lo) * (v - v_lo) / (v_hi - v_lo)),
    )


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"


def plot(
    path: Path,
    panels: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    marker_s: float | None = None,
    total_s: float | None = None,
) -> None:
    """``panels``: (title, [(seconds, value), ...]) each; an empty series is drawn as
    "not available". ``marker_s``: where the warm-up ends (dotted line)."""
    width, panel_h, left, right, top, bottom = 900, 200, 90, 20, 30, 28
    canvas = Canvas(width, panel_h * len(panels))
    ink, grey, blue, red = (0, 0, 0), (190, 190, 190), (20, 80, 200), (200, 40, 40)
    for p, (title, series) in enumerate(panels):
        y0 = p * panel_h
        x_lo, x_hi = left, width - right
        y_lo, y_hi = y0 + top, y0 + panel_h - bottom
        canvas.text(left, y0 + 8, title, ink)
        for x in (x_lo, x_hi):
            canvas.line(x, y_lo, x, y_hi, grey)
        for y in (y_lo, y_hi):
            canvas.line(x_lo, y, x_hi, y, grey)
        if not series:
            canvas.text(x_lo + 20, (y_lo + y_hi) // 2, "NOT AVAILABLE", red)
            continue
        t_max = total_s or max(t for t, _ in series) or 1.0
        vs = [v for _, v in series]
        v_lo, v_hi = min(vs), max(vs)
        if v_hi - v_lo < 1e-9 * max(1.0, abs(v_hi)):
            v_lo, v_hi = v_lo - 1, v_hi + 1
        pad = (v_hi - v_lo) * 0.05
        v_lo, v_hi = v_lo - pad, v_hi + pad
        canvas.text(4, y_lo, _fmt(v_hi), ink)
        canvas.text(4, y_hi - 10, _fmt(v_lo), ink)
        canvas.text(x_lo, y_hi + 8, "0 MIN", ink)
        end = f"{t_max / 60:.0f} MIN"
        canvas.text(x_hi - len(end) * 8, y_hi + 8, end, ink)

        box = (x_lo, x_hi, y_lo, y_hi, t_max, v_lo, v_hi)
        if marker_s is not None and marker_s < t_max:
            mx, _ = _px(box, marker_s, v_lo)
            for y in range(y_lo, y_hi, 4):
                canvas.dot(mx, y, red)
        points = [_px(box, t, v) for t, v in series]
        for (ax, ay), (bx, by) in itertools.pairwise(points):
            canvas.line(ax, ay, bx, by, blue)
        for x, y in points:
            canvas.dot(x, y, blue)
    path.write_bytes(canvas.png())
