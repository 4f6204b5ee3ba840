"""A contact sheet of ToyWorld test images: boxes, labels and one caption each."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

_CELL = 256
_TEXT_LINES = 3


def contact_sheet(root: str | Path, count: int = 8, columns: int = 4) -> Image.Image:
    """Draw the first `count` test images of the ToyWorld at `root`."""
    root = Path(root)
    karpathy = json.loads((root / "annotations" / "dataset_toy.json").read_text())
    scenes = {s["file_name"]: s for s in
              json.loads((root / "annotations" / "scenes_toy.json").read_text())}
    shown = [im for im in karpathy["images"] if im["split"] == "test"][:count]
    font = ImageFont.load_default()
    line_h = 12
    cell_h = _CELL + _TEXT_LINES * line_h + 6
    rows = max(1, -(-len(shown) // columns))
    sheet = Image.new("RGB", (columns * _CELL, rows * cell_h), "white")
    for k, im in enumerate(shown):
        x0, y0 = (k % columns) * _CELL, (k // columns) * cell_h
        image = Image.open(root / im["filepath"] / im["filename"]).convert("RGB")
        scale = _CELL / image.width
        sheet.paste(image.resize((_CELL, round(image.height * scale))), (x0, y0))
        draw = ImageDraw.Draw(sheet)
        for obj in scenes[im["filename"]]["objects"]:
            x1, y1, x2, y2 = (v * scale for v in obj["box"])
            draw.rectangle((x0 + x1, y0 + y1, x0 + x2, y0 + y2), outline="black", width=2)
            label, at = f"{obj['color']} {obj['shape']}", (x0 + x1 + 2, y0 + y1 + 1)
            draw.rectangle(draw.textbbox(at, label, font=font), fill="white")
            draw.text(at, label, fill="black", font=font)
        caption = textwrap.wrap(im["sentences"][0]["raw"], width=40)[:_TEXT_LINES]
        for j, line in enumerate(caption):
            draw.text((x0 + 4, y0 + _CELL + 3 + j * line_h), line, fill="black", font=font)
    return sheet
