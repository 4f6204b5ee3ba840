"""A bundle's caption, VQA and localization models for a server: decoded pixels in, JSON-ready dicts out.

The models load and run on one thread of their own, so the server's requests never use
them at the same time (they share the detector and the decoding cache) and torch always
calls from the same thread: its OpenMP threads spin between operations only while the
process has no more OpenMP threads than cores, and every other calling thread brings its
own (calls from the server's thread pool ran at half the speed on 2 cores).
"""

from __future__ import annotations

import json
import math
import mimetypes
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlp.bundle import Bundle, ImageAnswerer, ImageCaptioner, ImageLocator

EXAMPLE_COUNT = 4


@dataclass(frozen=True)
class Example:
    """An example image, read once at start-up and served by its index."""

    name: str
    media_type: str
    data: bytes


class BundleModels:
    """`caption`, `ask` and `locate` return Futures: `.result()` them, or await
    `asyncio.wrap_future(...)` in a server."""

    def __init__(self, bundle: Bundle, device: str = "cpu"):
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="vlp-models")
        self._thread.submit(self._load, bundle, device).result()
        self.examples = example_images(bundle.root)

    def _load(self, bundle: Bundle, device: str) -> None:
        self.captioner = ImageCaptioner(bundle, device)
        self.answerer = ImageAnswerer(bundle, device) if bundle.vqa_model else None
        self.locator = ImageLocator(bundle, device) if bundle.grounding_model else None

    @property
    def beam_size(self) -> int:
        return self.captioner.generator.s.beam_size

    @property
    def tasks(self) -> list[str]:
        """The routes this bundle can serve."""
        return (["caption"] + (["ask"] if self.answerer else [])
                + (["locate"] if self.locator else []))

    def caption(self, pixels: np.ndarray, n_best: int) -> Future:
        """ImageCaptioner.caption_pixels, with the image's size."""
        return self._thread.submit(self._caption, pixels, n_best)

    def ask(self, pixels: np.ndarray, question: str, top: int) -> Future:
        """ImageAnswerer.ask_pixels, with the image's size."""
        return self._thread.submit(self._ask, pixels, question, top)

    def locate(self, pixels: np.ndarray, expression: str, top: int) -> Future:
        """ImageLocator.locate_pixels, with the image's size."""
        return self._thread.submit(self._locate, pixels, expression, top)

    def _caption(self, pixels: np.ndarray, n_best: int) -> dict:
        result = self.captioner.caption_pixels(pixels, n_best)
        for entry in [result, *result["n_best"]]:
            entry["score"] = _finite(entry["score"])
        return {**result, **_size(pixels)}

    def _ask(self, pixels: np.ndarray, question: str, top: int) -> dict:
        return {**self.answerer.ask_pixels(pixels, question, top), **_size(pixels)}

    def _locate(self, pixels: np.ndarray, expression: str, top: int) -> dict:
        return {**self.locator.locate_pixels(pixels, expression, top), **_size(pixels)}

    def close(self) -> None:
        self._thread.shutdown()


def example_images(root: Path, count: int = EXAMPLE_COUNT) -> list[Example]:
    """The first test images of the bundle's ToyWorld data (the ones the report shows),
    when the bundle directory has them; else none."""
    annotations = Path(root) / "toyworld" / "annotations" / "dataset_toy.json"
    if not annotations.is_file():
        return []
    images = [im for im in json.loads(annotations.read_text())["images"] if im["split"] == "test"]
    out = []
    for im in images[:count]:
        path = Path(root) / "toyworld" / im["filepath"] / im["filename"]
        media_type = mimetypes.guess_type(path.name)[0]
        if path.is_file() and media_type and media_type.startswith("image/"):
            out.append(Example(path.name, media_type, path.read_bytes()))
    return out


def _size(pixels: np.ndarray) -> dict:
    return {"width": int(pixels.shape[1]), "height": int(pixels.shape[0])}


def _finite(score: float) -> float | None:
    # A search that found no caption scores -inf, which JSON cannot carry.
    return score if math.isfinite(score) else None
