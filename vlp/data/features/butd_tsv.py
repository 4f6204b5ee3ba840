"""Bottom-up-attention TSV files (peteanderson80/bottom-up-attention, LXMERT, UNITER).

One row per image, tab-separated, no header; array fields are base64 of the raw float32
(or int64) bytes. The original columns are `image_id, image_w, image_h, num_boxes, boxes,
features`: no class probabilities and no box scores. Records from such rows get C = 0
(`cls_probs` of shape [N, 0], so the box/class vector is 6-d) and a score of 1 per box.
Rows that also carry `cls_prob` ([N, C] float32) or `objects_conf` ([N] float32, LXMERT)
fill those in; name the columns with `fields`.
"""

from __future__ import annotations

import base64
import binascii
import csv
import os
import sys
from collections.abc import Iterator

import numpy as np

from vlp.data.features.errors import RecordError, StoreError
from vlp.data.features.record import RegionRecord

BUTD_FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")
LXMERT_FIELDS = ("img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id",
                 "attrs_conf", "num_boxes", "boxes", "features")
PRESETS = {"butd": BUTD_FIELDS, "lxmert": LXMERT_FIELDS}
# LXMERT renamed three columns; they mean the same thing.
ALIASES = {"img_id": "image_id", "img_w": "image_w", "img_h": "image_h"}
REQUIRED = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")


def parse_fields(spec: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """Column names from a preset name ('butd', 'lxmert') or a comma-separated list."""
    if spec is None:
        return BUTD_FIELDS
    names = PRESETS.get(spec, spec) if isinstance(spec, str) else spec
    if isinstance(names, str):
        names = tuple(n.strip() for n in names.split(",") if n.strip())
    canonical = [ALIASES.get(n, n) for n in names]
    missing = [n for n in REQUIRED if n not in canonical]
    if missing:
        raise StoreError(f"TSV columns {','.join(names)} lack {', '.join(missing)} "
                         f"(presets: {', '.join(PRESETS)})")
    return tuple(names)


def _allow_long_fields() -> None:
    # A row's base64 features run to megabytes; csv refuses fields over 128 KiB by default.
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # C long is 32 bits on some platforms
            limit //= 2


def read_butd_tsv(paths, fields=None) -> Iterator[tuple[str, object]]:
    """(image id, thunk) per row of each file; the thunk decodes the row into a record
    or raises RecordError naming the id (and the file and line). Files and column names
    are checked now, rows as they are read."""
    names = parse_fields(fields)
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    for path in paths:
        if not os.path.isfile(path):
            raise StoreError(f"TSV file {path} does not exist")
    _allow_long_fields()
    return _rows(paths, names)


def _rows(paths, names):
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.DictReader(f, fieldnames=names, delimiter="\t")
            for line, row in enumerate(reader, start=1):
                row = {ALIASES.get(k, k): v for k, v in row.items()}
                key = (row.get("image_id") or "").strip() or f"<line {line}>"
                yield key, (lambda r=row, k=key, at=f"{path}:{line}": decode_row(r, k, at))


def decode_row(row: dict, key: str, where: str) -> RegionRecord:
    """One TSV row as a record, in the row's float32."""
    named = len(row) - (None in row)
    got = named + len(row[None]) if None in row else sum(v is not None for v in row.values())
    if got != named:
        raise RecordError(f"image {key!r} ({where}): the row has {got} tab-separated "
                          f"columns, {named} are named (see the TSV column names)")
    try:
        n = int(row["num_boxes"])
        boxes = _array(row["boxes"], np.float32).reshape(n, 4)
        features = _array(row["features"], np.float32).reshape(n, -1) if n else None
        cls = _array(row["cls_prob"], np.float32).reshape(n, -1) if row.get("cls_prob") \
            else np.zeros((n, 0), np.float32)
        scores = _array(row["objects_conf"], np.float32).reshape(n) \
            if row.get("objects_conf") else np.ones(n, np.float32)
        w, h = int(float(row["image_w"])), int(float(row["image_h"]))
    except (ValueError, binascii.Error) as err:
        raise RecordError(f"image {key!r} ({where}): cannot decode the row ({err})") from None
    if features is None:
        raise RecordError(f"image {key!r} ({where}): no regions (num_boxes = 0)")
    # Read in place, the release's float32 stays float32; a store written from it is float16.
    return RegionRecord(boxes=boxes, features=features, cls_probs=cls, scores=scores,
                        image_w=w, image_h=h)


def _array(text: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text, validate=True), dtype=dtype)
