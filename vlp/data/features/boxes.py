"""The model's per-region position input: a 6-d box vector and the class probabilities."""

from __future__ import annotations

import numpy as np

from vlp.data.features.record import RegionRecord

BOX_NORMS = ("image", "lazy")
# VLP's F.layer_norm calls used PyTorch's default eps.
LAYER_NORM_EPS = 1e-5
# VLP added this to the largest coordinate so that a degenerate record cannot divide by 0.
LAZY_EPS = 1e-5


def box_class_vector(record: RegionRecord, box_norm: str = "image",
                     eps: float = LAYER_NORM_EPS) -> np.ndarray:
    """[N, 6 + C] float32: layer_norm([x1/w, y1/h, x2/w, y2/h, area, score]) ++ layer_norm(cls).

    Both halves are layer-normalised separately with no affine parameters; `area` is the
    box area over the image area, clamped at 0. 1607 dims for VLP's 1601 classes, 6 for a
    BUTD TSV record (C = 0).

    box_norm="image" divides by the stored image size. box_norm="lazy" reproduces VLP,
    whose release stored no image size: w and h are the largest x and y coordinate over
    the image's boxes (plus 1e-5), so the vector is only as good as that estimate.
    """
    x1, y1, x2, y2 = normalised_corners(record, box_norm)
    area = np.maximum((x2 - x1) * (y2 - y1), np.float32(0))
    six = np.stack([x1, y1, x2, y2, area, np.asarray(record.scores, np.float32)], axis=1)
    cls = np.asarray(record.cls_probs, dtype=np.float32)
    return np.concatenate([layer_norm(six, eps), layer_norm(cls, eps)], axis=1)


def normalised_corners(record: RegionRecord, box_norm: str = "image") -> np.ndarray:
    """[4, N] float32: x1/w, y1/h, x2/w, y2/h, with w and h as box_class_vector takes them."""
    boxes = np.asarray(record.boxes, dtype=np.float32)
    w, h = image_scale(record, box_norm)
    return (boxes / np.array([w, h, w, h], dtype=np.float32)).T


def resolve_box_norm(record: RegionRecord, box_norm: str) -> str:
    """box_norm with "auto" made "image" where the record stores its image size, else
    "lazy"."""
    if box_norm != "auto":
        return box_norm
    return "image" if record.has_image_size else "lazy"


def corner_centres(corners: np.ndarray) -> np.ndarray:
    """[N, 2]: the centre (x, y) of each box of normalised_corners' [4, N]."""
    x1, y1, x2, y2 = corners
    return np.stack([(x1 + x2) / 2, (y1 + y2) / 2], axis=1)


def image_scale(record: RegionRecord, box_norm: str = "image") -> tuple[np.float32, np.float32]:
    """The width and height that box_norm divides a record's pixel coordinates by."""
    if box_norm == "image":
        if not record.has_image_size:
            raise ValueError("this record stores no image size (VLP's released features); "
                             "use box_norm='lazy' to normalise by the largest box coordinate")
        return np.float32(record.image_w), np.float32(record.image_h)
    if box_norm == "lazy":
        boxes = np.asarray(record.boxes, dtype=np.float32)
        return (boxes[:, [0, 2]].max() + np.float32(LAZY_EPS),
                boxes[:, [1, 3]].max() + np.float32(LAZY_EPS))
    raise ValueError(f"box_norm must be one of {BOX_NORMS}, got {box_norm!r}")


def box_sinusoids(record: RegionRecord, frequencies: int, box_norm: str = "image") -> np.ndarray:
    """[N, 4 * (1 + 2F)] float32: centre x, centre y, width and height over the image
    size, then sin(2^k * pi * v) for every k < F and value v, then the cosines likewise
    (F = 0: the four values alone).

    A single coordinate is a poor input for a question on which third of the image a
    shape lies in; its sines and cosines make such a question linear in the features."""
    corners = normalised_corners(record, box_norm)
    x1, y1, x2, y2 = corners
    values = np.concatenate([corner_centres(corners), np.stack([x2 - x1, y2 - y1], axis=1)], 1)
    if frequencies == 0:
        return values.astype(np.float32)
    angles = (values[:, :, None] * (np.pi * 2.0 ** np.arange(frequencies))).reshape(len(values), -1)
    return np.concatenate([values, np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def layer_norm(x: np.ndarray, eps: float = LAYER_NORM_EPS) -> np.ndarray:
    """Normalise the last axis to zero mean, unit (biased) variance; no scale or shift."""
    if x.shape[-1] == 0:
        return x.astype(np.float32)
    mean = x.mean(axis=-1, keepdims=True)
    var = np.square(x - mean).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + np.float32(eps))).astype(np.float32)
