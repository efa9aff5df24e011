"""Picture grids a person looks at: every item a tile (images scaled to CELL×CELL pixels,
captions drawn as text on TEXT_WIDTH×CELL), tiles in rows and columns with a header row of
labels, saved as PNG atomically. Sizes are fixed so a grid's pixel size follows from its shape
(``grid_size``)."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmbench.results import atomic_write_bytes

CELL = 64
TEXT_WIDTH = 3 * CELL
HEADER = 26  # two lines of the default font
PAD = 2
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def tile(item) -> Image.Image:
    """A modality's rendering (an [H, W, 3] uint8 array, or a string) as one tile."""
    if isinstance(item, str):
        return text_tile(item, TEXT_WIDTH, CELL)
    return Image.fromarray(np.asarray(item, dtype=np.uint8)).resize((CELL, CELL), Image.NEAREST)


def text_tile(text: str, width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    lines = textwrap.wrap(text, width=max(1, width // 6)) or [""]
    draw.multiline_text((2, 2), "\n".join(lines), fill=INK, font=font, spacing=1)
    return image


def tile_width(item) -> int:
    return TEXT_WIDTH if isinstance(item, str) else CELL


def grid_size(column_widths: list[int], rows: int, header: bool = True) -> tuple[int, int]:
    """(width, height) in pixels of a grid with these column widths and this many rows."""
    width = sum(column_widths) + PAD * (len(column_widths) + 1)
    height = rows * CELL + PAD * (rows + 1) + ((HEADER + PAD) if header else 0)
    return width, height


def compose(rows: list[list], header: list[str] | None = None) -> Image.Image:
    """A grid of items (renderings, see ``tile``): rows × columns, with an optional header."""
    widths = [max(tile_width(row[c]) for row in rows) for c in range(len(rows[0]))]
    image = Image.new("RGB", grid_size(widths, len(rows), header is not None), BACKGROUND)
    top = PAD
    if header is not None:
        left = PAD
        for label, w in zip(header, widths):
            image.paste(text_tile(label, w, HEADER), (left, top))
            left += w + PAD
        top += HEADER + PAD
    for row in rows:
        left = PAD
        for item, w in zip(row, widths):
            image.paste(tile(item), (left, top))
            left += w + PAD
        top += CELL + PAD
    return image


def save_png(image: Image.Image, path: Path) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
