"""Pictures of text emerging from masks: the grid layout, and what each cell shows."""

from __future__ import annotations

import numpy as np
import pytest

from rediffuse.viz.text import CELL, MARGIN, MASKED, NEW, OLD, layout, text_frames, text_trajectory_png


def test_layout_wraps_at_the_columns_and_after_newlines():
    assert layout(list("abcde"), 2) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    assert layout(["a", "\n", "b", None], 3) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    with pytest.raises(ValueError, match="columns must be >= 1"):
        layout(["a"], 0)


def colours(image, position: int, columns: int) -> set[tuple[int, int, int]]:
    """The colours inside a position's cell (grid rows start two text rows below the header)."""
    row, col = divmod(position, columns)
    x, y = MARGIN + col * CELL[0], MARGIN + (row + 2) * CELL[1]
    pixels = np.asarray(image)[y: y + CELL[1], x: x + CELL[0]].reshape(-1, 3)
    return {tuple(int(v) for v in p) for p in pixels}


def test_masked_cells_are_grey_new_tokens_red_old_tokens_black():
    states = [(1.0, [None, None, None]), (0.5, ["W", None, None]), (0.0, ["W", "W", "W"])]
    first, middle, last = text_frames(states, columns=3)
    assert first.size == middle.size == last.size
    assert MASKED in colours(first, 0, 3) and NEW not in colours(first, 0, 3)
    assert NEW in colours(middle, 0, 3) and MASKED in colours(middle, 1, 3)
    assert OLD in colours(last, 0, 3) and NEW not in colours(last, 0, 3) and NEW in colours(last, 2, 3)


def test_the_png_strip_stacks_the_first_and_last_states(tmp_path):
    from PIL import Image
    states = [(1 - k / 9, ["a"] * k + [None] * (9 - k)) for k in range(10)]
    path = text_trajectory_png(tmp_path / "t.png", states, columns=9, shown=3)
    frame = text_frames(states[:1] + states[-1:], columns=9)[0].size
    with Image.open(path) as strip:
        assert strip.size == (frame[0], 3 * frame[1])
