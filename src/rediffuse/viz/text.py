"""Pictures of text emerging from masks: one sample's states over the reverse process, as a PNG strip or a GIF.

A state is the sample's characters at one time t, None where a token is still masked. Every state is drawn on
the same character grid (the final text wrapped at `columns`, a newline ending its row), in Pillow's built-in
6 x 11 bitmap font: masked cells as grey blocks, tokens revealed since the previous state in red, the rest black.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from rediffuse.viz import save_gif, save_image

State = tuple[float, Sequence[str | None]]  # (t, one character or None per position)
CELL = (6, 11)  # the bitmap font's character box (width, height) in pixels
MARGIN = 4
MASKED, NEW, OLD, BACKGROUND = (205, 205, 205), (200, 30, 30), (0, 0, 0), (255, 255, 255)


def layout(chars: Sequence[str | None], columns: int) -> list[tuple[int, int]]:
    """(row, column) of each position: wrapped at `columns` cells, a newline character ending its row."""
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    cells, row, col = [], 0, 0
    for ch in chars:
        if col == columns:
            row, col = row + 1, 0
        cells.append((row, col))
        if ch == "\n":
            row, col = row + 1, 0
        else:
            col += 1
    return cells


def text_frame(state: State, previous: Sequence[str | None] | None, cells: list[tuple[int, int]],
               size: tuple[int, int]) -> Image.Image:
    """One state drawn on the grid `cells` (from `layout`), headed by its time and the count of revealed tokens."""
    t, chars = state
    font = ImageFont.load_default_imagefont()
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    shown = sum(ch is not None for ch in chars)
    draw.text((MARGIN, MARGIN), f"t = {t:.3f}   {shown}/{len(chars)} revealed", fill=OLD, font=font)
    for i, (ch, (row, col)) in enumerate(zip(chars, cells)):
        x, y = MARGIN + col * CELL[0], MARGIN + (row + 2) * CELL[1]
        if ch is None:
            draw.rectangle([x, y + 1, x + CELL[0] - 2, y + CELL[1] - 2], fill=MASKED)
        elif ch != "\n":
            new = previous is not None and previous[i] is None
            draw.text((x, y), ch if ch.isprintable() else "?", fill=NEW if new else OLD, font=font)
    return image


def text_frames(states: Sequence[State], columns: int = 64) -> list[Image.Image]:
    """Every state as a picture of one size, laid out by the last state's text."""
    if not states:
        raise ValueError("a text trajectory needs at least one state")
    cells = layout(states[-1][1], columns)
    rows = 1 + max((r for r, _ in cells), default=0)
    size = (2 * MARGIN + columns * CELL[0], 2 * MARGIN + (rows + 2) * CELL[1])
    return [text_frame(s, states[k - 1][1] if k else None, cells, size) for k, s in enumerate(states)]


def text_trajectory_png(path: str | Path, states: Sequence[State], columns: int = 64, shown: int = 6) -> Path:
    """`shown` evenly spaced states (the first and last included) stacked top to bottom, as a PNG; red marks
    what was revealed since the state above."""
    picks = sorted({round(k * (len(states) - 1) / max(1, shown - 1)) for k in range(shown)})
    frames = text_frames([states[i] for i in picks], columns)
    width, height = frames[0].size
    strip = Image.new("RGB", (width, height * len(frames)), BACKGROUND)
    for k, frame in enumerate(frames):
        strip.paste(frame, (0, k * height))
    return save_image(strip, path)


def text_trajectory_gif(path: str | Path, states: Sequence[State], columns: int = 64, duration_ms: int = 120
                        ) -> Path:
    """Every state as one frame of a looping GIF."""
    return save_gif(path, text_frames(states, columns), duration_ms)
