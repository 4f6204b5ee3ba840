"""Which images to extract, and decoding them into RGB tensors or a reason to skip.

Kept and converted to RGB: grayscale, palette, RGBA/LA (the alpha channel is dropped,
as OpenCV's imread does for the original extractors), CMYK, and 16-bit images (scaled
to 8 bits). Skipped with a reason: missing or empty files, files that are not images,
truncated files, images with a side under MIN_SIDE pixels, and images over the
decompression-bomb limit (`max_pixels`, Pillow's 89.5 MP by default).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlp.errors import VLPError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MIN_SIDE = 8  # px; smaller images hold no region worth a feature
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS
# What decode_rgb_bytes opens (Pillow's format names; the ones this Pillow reads).
UPLOAD_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")


class BadImage(Exception):
    """An image that cannot be used; the message is the reason written to errors.jsonl."""


class TooManyPixels(BadImage):
    """An image over the decompression-bomb limit, refused from its header."""


@dataclass(frozen=True)
class ImageItem:
    key: str  # the store id
    path: str
    boxes: tuple | None = None  # given boxes, xyxy pixels (given-boxes mode)


def from_directory(directory) -> list[ImageItem]:
    """Every image file directly in `directory`, keyed by file stem, sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise VLPError(f"--images {directory} is not a directory")
    paths = sorted(p for p in directory.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    return _unique([ImageItem(p.stem, str(p)) for p in paths], f"--images {directory}")


def from_list(list_file, root=None) -> list[ImageItem]:
    """One image path per line (relative paths are taken from `root`, else the list's
    folder); blank lines and lines starting with # are ignored."""
    list_file = Path(list_file)
    try:
        lines = list_file.read_text().splitlines()
    except OSError as err:
        raise VLPError(f"cannot read --image-list {list_file}: {err.strerror}") from None
    base = Path(root) if root else list_file.parent
    items = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            p = p if p.is_absolute() else base / p
            items.append(ImageItem(p.stem, str(p)))
    return _unique(items, f"--image-list {list_file}")


def from_coco(coco_json, image_dir, key: str = "stem") -> list[ImageItem]:
    """The images of a COCO-format file with their annotation boxes (given-boxes mode).

    key: "stem" (the file name without extension) or "id" (the COCO image id).
    """
    path = Path(coco_json)
    try:
        data = json.loads(path.read_text())
        images = data["images"]
        annotations = data.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise VLPError(f"cannot read COCO boxes from {path}: {err}") from None
    boxes: dict[int, list] = {}
    for ann in annotations:
        x, y, w, h = ann["bbox"]
        boxes.setdefault(ann["image_id"], []).append((x, y, x + w, y + h))
    items = []
    for im in images:
        name = im["file_name"]
        ident = Path(name).stem if key == "stem" else str(im["id"])
        items.append(ImageItem(ident, str(Path(image_dir) / name),
                               tuple(boxes.get(im["id"], ()))))
    return _unique(items, f"--boxes {path}")


def _unique(items: list[ImageItem], where: str) -> list[ImageItem]:
    seen: dict[str, str] = {}
    for item in items:
        if item.key in seen:
            raise VLPError(f"{where}: {seen[item.key]} and {item.path} share the image id "
                           f"{item.key!r}; rename one")
        seen[item.key] = item.path
    return items


def shard(items: list[ImageItem], index: int, count: int) -> list[ImageItem]:
    """The part of `items` shard `index` of `count` owns, by a hash of the id, so a
    shard's images do not depend on the other files in the list."""
    return [it for it in items if zlib.crc32(it.key.encode("utf-8")) % count == index]


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise VLPError(f"--shard expects I/N such as 0/4, got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise VLPError(f"--shard {text}: need 0 <= I < N")
    return index, count


def decode_rgb(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 [H, W, 3] array, or BadImage saying why not."""
    p = Path(path)
    if not p.is_file():
        raise BadImage("missing file")
    if p.stat().st_size == 0:
        raise BadImage("empty file (0 bytes)")
    return _decode(p, max_pixels)


def decode_rgb_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """decode_rgb for an image held in memory (an upload): the same checks, the size
    read from the header before any pixel is decoded, and only the common photo and
    graphics formats (Pillow would hand some others, such as EPS, to outside programs)."""
    import io

    from PIL import Image

    if not data:
        raise BadImage("empty file (0 bytes)")
    Image.init()
    formats = tuple(f for f in UPLOAD_FORMATS if f in Image.OPEN)
    return _decode(io.BytesIO(data), max_pixels, formats)


def _decode(source, max_pixels: int, formats: tuple[str, ...] | None = None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source, formats=formats) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise TooManyPixels(f"{w}x{h} pixels exceeds the decompression-bomb limit of "
                                    f"{max_pixels} pixels")
            if min(w, h) < MIN_SIDE:
                raise BadImage(f"{w}x{h} pixels is too small (sides under {MIN_SIDE} px)")
            img.load()
            return _to_rgb(img)
    except BadImage:
        raise
    except Image.DecompressionBombError:
        # Pillow refused it on opening, past twice its own limit: the size stays unknown.
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
        raise TooManyPixels(f"declares more than {limit} pixels (the decompression-bomb "
                            "limit)") from None
    except UnidentifiedImageError:
        if formats:
            raise BadImage(f"not an image in a format accepted here ({', '.join(formats)})"
                           ) from None
        raise BadImage("not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise BadImage(f"cannot decode: {err}") from None


def _to_rgb(img) -> np.ndarray:
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit (or wider) grayscale: Pillow's convert("RGB") would clip, not scale.
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode != "F" and a.max() > 255 else 255.0
        a = np.clip(a * (255.0 / top), 0, 255).round().astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if mode == "P" else img.convert("RGB")
    return np.array(img, dtype=np.uint8)  # a writable copy, for torch.from_numpy
