"""ToyWorld scenes: sampling non-overlapping shapes and drawing them.

A scene is a list of `Shape`s with pixel boxes. Everything is drawn from a numpy
Generator seeded per image, so image k is the same whatever else is generated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
RGB = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 205, 35),
    "purple": (135, 55, 175),
    "orange": (245, 135, 25),
}
# Side of a shape's box as a fraction of the image side, before +-10% jitter.
SIDE = {"small": 0.16, "large": 0.30}
MAX_OBJECTS = 4
# Below this the small shapes shrink to a few pixels and stop being recognisable.
MIN_IMAGE_SIZE = 64
MAX_IMAGE_SIZE = 2048
_PLACEMENT_TRIES = 200
_CIRCLE_VERTICES = 24


@dataclass(frozen=True)
class Shape:
    shape: str
    color: str
    size: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, exclusive end

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    @property
    def category(self) -> str:
        return f"{self.size} {self.color} {self.shape}"

    def polygon(self) -> list[tuple[float, float]]:
        """Outline as (x, y) vertices; the COCO segmentation and the drawing agree."""
        x1, y1, x2, y2 = self.box
        if self.shape == "square":
            return [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
        if self.shape == "triangle":
            return [((x1 + x2) / 2, y1), (x2, y2), (x1, y2)]
        cx, cy = self.center
        r = (x2 - x1) / 2
        return [
            (cx + r * math.cos(2 * math.pi * k / _CIRCLE_VERTICES),
             cy + r * math.sin(2 * math.pi * k / _CIRCLE_VERTICES))
            for k in range(_CIRCLE_VERTICES)
        ]

    def area(self) -> float:
        pts = self.polygon()
        return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]))) / 2


def sample_scene(rng: np.random.Generator, image_size: int) -> list[Shape]:
    """1-4 shapes with boxes inside the image and a gap between any two boxes."""
    wanted = int(rng.integers(1, MAX_OBJECTS + 1))
    gap = max(2, round(0.03 * image_size))
    shapes: list[Shape] = []
    for _ in range(wanted):
        shape = SHAPES[rng.integers(len(SHAPES))]
        color = COLORS[rng.integers(len(COLORS))]
        size = SIZES[rng.integers(len(SIZES))]
        side = round(SIDE[size] * image_size * rng.uniform(0.9, 1.1))
        box = _place(rng, side, image_size, gap, [s.box for s in shapes])
        # A crowded image keeps the shapes that fit; captions and answers describe those.
        if box is not None:
            shapes.append(Shape(shape, color, size, box))
    return shapes


def _place(rng, side, image_size, gap, taken):
    hi = image_size - side - gap
    for _ in range(_PLACEMENT_TRIES):
        x1, y1 = (int(v) for v in rng.integers(gap, hi + 1, size=2))
        box = (x1, y1, x1 + side, y1 + side)
        if all(_apart(box, other, gap) for other in taken):
            return box
    return None


def _apart(a, b, gap) -> bool:
    return (a[2] + gap <= b[0] or b[2] + gap <= a[0]
            or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def render(shapes: list[Shape], rng: np.random.Generator, image_size: int) -> Image.Image:
    """Shapes on a light, softly textured background."""
    canvas = Image.fromarray(_background(rng, image_size))
    draw = ImageDraw.Draw(canvas)
    for s in shapes:
        fill = tuple(min(255, max(0, c + int(rng.integers(-12, 13)))) for c in RGB[s.color])
        outline = tuple(int(c * 0.7) for c in fill)
        x1, y1, x2, y2 = s.box
        # PIL's end coordinates are inclusive; our boxes are exclusive.
        if s.shape == "circle":
            draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill, outline=outline)
        elif s.shape == "square":
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill, outline=outline)
        else:
            draw.polygon([((x1 + x2 - 1) / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)],
                         fill=fill, outline=outline)
    return canvas


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    base = rng.uniform(190, 230) + rng.uniform(-10, 10, size=3)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    angle = rng.uniform(0, math.pi)
    freq = rng.uniform(2, 6)
    waves = 6 * np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)))
    grain = rng.normal(0, 4, size=(n, n, 3)).astype(np.float32)
    pixels = base[None, None, :] + waves[..., None] + grain
    return np.clip(pixels, 0, 255).astype(np.uint8)
