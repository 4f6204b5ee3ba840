"""The region record: one image's detected regions, and the checks every store applies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlp.data.features.errors import RecordError

FEATURE_DTYPE = np.float16
CLS_DTYPE = np.float16
BOX_DTYPE = np.float32
SCORE_DTYPE = np.float32

# Detectors that clip to [0, w-1] and those that clip to [0, w] both pass; anything
# further out than this is a bug in the extraction, not rounding.
BOX_TOLERANCE_PX = 1.0

# float16 exponent bits; all ones means inf or NaN.
_F16_EXPONENT = np.uint16(0x7C00)


@dataclass(eq=False)
class RegionRecord:
    """Regions of one image.

    boxes     [N, 4] float32, pixels, x1 y1 x2 y2
    features  [N, D] float16 (the detector's pooled region features)
    cls_probs [N, C] float16, background class included; C may be 0 (BUTD TSV)
    scores    [N]    float32, detection confidence
    image_w, image_h: pixels, or None where the source never stored them (VLP's release)
    """

    boxes: np.ndarray
    features: np.ndarray
    cls_probs: np.ndarray
    scores: np.ndarray
    image_w: int | None = None
    image_h: int | None = None

    @property
    def num_regions(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.cls_probs.shape[1])

    @property
    def has_image_size(self) -> bool:
        return self.image_w is not None

    def stored(self) -> "RegionRecord":
        """This record in the storage dtypes (copies only the arrays that change)."""
        w, h = _image_size(self.image_w, self.image_h)
        # Out-of-range values become inf here and check_record names them; no warning.
        with np.errstate(over="ignore"):
            return self._cast(w, h)

    def _cast(self, w, h) -> "RegionRecord":
        return RegionRecord(
            boxes=np.ascontiguousarray(self.boxes, dtype=BOX_DTYPE),
            features=np.ascontiguousarray(self.features, dtype=FEATURE_DTYPE),
            cls_probs=np.ascontiguousarray(self.cls_probs, dtype=CLS_DTYPE),
            scores=np.ascontiguousarray(self.scores, dtype=SCORE_DTYPE),
            image_w=w, image_h=h,
        )

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.boxes, self.features, self.cls_probs, self.scores))


def as_read(array) -> np.ndarray:
    """A released file's float array in its own dtype (VLP's float32 COCO features stay
    float32, its CC features float16); anything else as float32."""
    a = np.asarray(array)
    return a if a.dtype in (np.float16, np.float32) else a.astype(np.float32)


def _image_size(w, h) -> tuple[int | None, int | None]:
    if (w is None) != (h is None):
        raise ValueError(f"image size must give both width and height or neither, got {w}x{h}")
    if w is None:
        return None, None
    return int(w), int(h)


def check_record(record: RegionRecord, image_id: str, *, feature_dim: int | None = None,
                 num_classes: int | None = None, values: bool = True, where: str = "") -> None:
    """Raise RecordError naming `image_id` if `record` breaks the record contract.

    `values=False` skips the NaN/inf scan of features and class probabilities, the
    only check whose cost grows with the feature size; boxes and scores are always checked.
    """
    at = f"image {image_id!r}" + (f" in {where}" if where else "")
    arrays = _check_shapes(record, at, feature_dim, num_classes)
    _check_image_size(record, at)
    boxes, features, cls_probs, scores = arrays
    if not _boxes_fit(boxes, record.image_w, record.image_h):
        _explain_boxes(boxes, record, at)
    if not np.isfinite(scores).all():
        raise RecordError(f"{at}: scores contain NaN or inf")
    if values:
        for name, a in (("features", features), ("cls_probs", cls_probs)):
            if not _finite(a):
                raise RecordError(f"{at}: {name} contain NaN or inf (float16 holds |x| < 65504)")


def _check_shapes(record, at, feature_dim, num_classes) -> list[np.ndarray]:
    arrays = [a if isinstance(a, np.ndarray) else np.asarray(a)
              for a in (record.boxes, record.features, record.cls_probs, record.scores)]
    b, f, c, s = arrays
    if b.ndim != 2 or b.shape[1] != 4:
        raise RecordError(f"{at}: boxes must be [N, 4], got {list(b.shape)}")
    n = b.shape[0]
    if n < 1:
        raise RecordError(f"{at}: no regions (N = 0)")
    for name, a in (("features", f), ("cls_probs", c)):
        if a.ndim != 2 or a.shape[0] != n:
            raise RecordError(f"{at}: {name} must be [{n}, *] to match {n} boxes, "
                              f"got {list(a.shape)}")
    if s.shape != (n,):
        raise RecordError(f"{at}: scores must be [{n}], got {list(s.shape)}")
    d, k = f.shape[1], c.shape[1]
    if d < 1:
        raise RecordError(f"{at}: features have 0 dims")
    if feature_dim is not None and d != feature_dim:
        raise RecordError(f"{at}: features have {d} dims, the store holds {feature_dim}")
    if num_classes is not None and k != num_classes:
        raise RecordError(f"{at}: cls_probs have {k} classes, the store holds {num_classes}")
    return arrays


def _check_image_size(record, at) -> None:
    w, h = record.image_w, record.image_h
    if w is None and h is None:
        return
    if w is None or h is None or not (int(w) == w and int(h) == h) or w <= 0 or h <= 0:
        raise RecordError(f"{at}: image size must be positive integers or absent, got {w}x{h}")


# Columns x1, y1, -x2, -y2, x2 - x1, y2 - y1 of boxes . _BOX_TERMS: one product and one
# min check every box constraint (the subtraction rounds exactly as x2 - x1 would).
_BOX_TERMS = np.array([[1, 0, 0, 0, -1, 0],
                       [0, 1, 0, 0, 0, -1],
                       [0, 0, -1, 0, 1, 0],
                       [0, 0, 0, -1, 0, 1]], dtype=np.float32)
_NO_LIMIT = float(np.finfo(np.float32).max)


def _boxes_fit(b: np.ndarray, w, h) -> bool:
    """Finite, x1 <= x2, y1 <= y2 and inside the image; _explain_boxes says which box
    is wrong."""
    if not np.isfinite(b).all():  # before the product, where 0 * inf would warn
        return False
    tol = BOX_TOLERANCE_PX
    lo = np.dot(b.astype(np.float32, copy=False), _BOX_TERMS).min(axis=0).tolist()
    return (lo[0] >= -tol and lo[1] >= -tol and lo[4] >= 0 and lo[5] >= 0
            and -lo[2] <= (_NO_LIMIT if w is None else w + tol)
            and -lo[3] <= (_NO_LIMIT if h is None else h + tol))


def _explain_boxes(b: np.ndarray, record, at) -> None:
    b = b.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(b).all(axis=1))
    if bad.size:
        raise RecordError(f"{at}: box {int(bad[0])} contains NaN or inf: {b[bad[0]].tolist()}")
    x1, y1, x2, y2 = b.T
    flipped = np.flatnonzero((x2 < x1) | (y2 < y1))
    if flipped.size:
        i = int(flipped[0])
        raise RecordError(f"{at}: box {i} has x2 < x1 or y2 < y1: {b[i].tolist()}")
    i = int(np.argmax(np.maximum(-b[:, 0], -b[:, 1]) > BOX_TOLERANCE_PX)) \
        if (b[:, :2].min() < -BOX_TOLERANCE_PX) else None
    if i is None:
        over_x = x2 - record.image_w if record.image_w is not None else np.zeros_like(x2)
        over_y = y2 - record.image_h if record.image_h is not None else np.zeros_like(y2)
        i = int(np.argmax(np.maximum(over_x, over_y)))
    w, h = record.image_w, record.image_h
    where = "the image" if w is None else f"the {w}x{h} image"
    raise RecordError(f"{at}: box {i} {b[i].tolist()} lies outside {where}")


def _finite(a: np.ndarray) -> bool:
    if a.dtype == np.float16:
        # np.isfinite on float16 converts element by element (~20x slower than this).
        bits = np.ascontiguousarray(a).view(np.uint16)
        return a.size == 0 or int(np.bitwise_and(bits, _F16_EXPONENT).max()) != 0x7C00
    if a.dtype.kind == "f":
        return bool(np.isfinite(a).all())
    return True
