"""The plot's Chinese: titles drawn with the shipped Noto Sans SC subset, not as boxes.

A font without hanzi draws every character as the same "missing glyph" box, so two different
Chinese titles give the same pixels; with the font chain of `sentinel.plot` they differ, and
matplotlib warns of no missing glyph. The font-less render is the control that shows the check can fail.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

import matplotlib

matplotlib.use("Agg")
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np

from sentinel import plot

TITLES = ("threshold type=退款问题", "threshold type=物流延迟")


def render(title: str, families: list[str], path: Path) -> tuple[np.ndarray, list[str]]:
    """The title alone as a PNG, read back; and the warnings drawing it raised."""
    with warnings.catch_warnings(record=True) as caught, matplotlib.rc_context({"font.family": families}):
        warnings.simplefilter("always")
        fig = plt.figure(figsize=(3.2, 0.5), dpi=100)
        fig.text(0.02, 0.3, title, fontsize=14)
        fig.savefig(path)
        plt.close(fig)
    return matplotlib.image.imread(str(path)), [str(w.message) for w in caught]


def glyph_warnings(messages: list[str]) -> list[str]:
    return [m for m in messages if "Glyph" in m and "missing" in m]


def test_without_a_cjk_font_different_titles_draw_the_same_boxes(tmp_path: Path) -> None:
    """The control: DejaVu Sans alone has no hanzi."""
    a, warned_a = render(TITLES[0], [plot.LATIN_FONT], tmp_path / "a.png")
    b, warned_b = render(TITLES[1], [plot.LATIN_FONT], tmp_path / "b.png")
    assert np.array_equal(a, b)
    assert len(glyph_warnings(warned_a)) == 4 and len(glyph_warnings(warned_b)) == 4  # one per character


def test_with_the_shipped_font_chinese_titles_draw_their_characters(tmp_path: Path) -> None:
    families = plot.font_families()
    assert families[:2] == [plot.LATIN_FONT, plot.FONT_FAMILY]
    a, warned_a = render(TITLES[0], families, tmp_path / "a.png")
    b, warned_b = render(TITLES[1], families, tmp_path / "b.png")
    boxes, _ = render(TITLES[0], [plot.LATIN_FONT], tmp_path / "boxes.png")
    assert glyph_warnings(warned_a + warned_b) == []
    assert not np.array_equal(a, b)  # different characters, different pixels
    assert not np.array_equal(a, boxes)
    # the Latin prefix is drawn by the same font either way: only the Chinese part differs
    width = a.shape[1]
    differs = np.flatnonzero(np.any(a != b, axis=(0, 2)))
    assert differs.min() > width // 4


def test_the_shipped_font_and_its_licence_are_in_the_package() -> None:
    assert plot.FONT_FILE.is_file() and plot.FONT_FILE.stat().st_size < 3_000_000
    licence = (plot.FONT_FILE.parent / "OFL.txt").read_text(encoding="utf-8")
    assert "SIL Open Font License, Version 1.1" in licence
