"""One record as one byte string (the LMDB value): a fixed header, then the four arrays."""

from __future__ import annotations

import struct

import numpy as np

from vlp.data.features.errors import StoreError
from vlp.data.features.record import (BOX_DTYPE, CLS_DTYPE, FEATURE_DTYPE, SCORE_DTYPE,
                                      RegionRecord)

MAGIC = b"VLPR"
VERSION = 1
# magic, version, reserved, N, D, C, image_w, image_h (0 = not stored), padding to 32
# bytes so that every array after it starts aligned.
HEADER = struct.Struct("<4sHHIIIii4x")


def encode(record: RegionRecord) -> bytes:
    """Bytes of a record already in storage dtypes (RegionRecord.stored())."""
    n, d, c = record.num_regions, record.feature_dim, record.num_classes
    head = HEADER.pack(MAGIC, VERSION, 0, n, d, c, record.image_w or 0, record.image_h or 0)
    return b"".join((head, record.boxes.tobytes(), record.scores.tobytes(),
                     record.features.tobytes(), record.cls_probs.tobytes()))


def encoded_size(n: int, d: int, c: int) -> int:
    return HEADER.size + n * (4 * 4 + 4) + 2 * n * (d + c)


def decode(buf, image_id: str, path) -> RegionRecord:
    """Record from `buf` (bytes or a memoryview that may vanish after this call).

    The bytes are copied exactly once, into a buffer the returned arrays own, so they are
    writable (torch.from_numpy accepts them) and outlive an LMDB transaction.
    """
    if len(buf) < HEADER.size:
        raise _corrupt(image_id, path, f"{len(buf)} bytes, shorter than the header")
    magic, version, _, n, d, c, w, h = HEADER.unpack_from(buf, 0)
    if magic != MAGIC or version != VERSION:
        raise _corrupt(image_id, path, f"bad header {bytes(magic)!r} v{version}")
    if len(buf) != encoded_size(n, d, c):
        raise _corrupt(image_id, path, f"{len(buf)} bytes, header says {n}x{d} features "
                       f"and {c} classes ({encoded_size(n, d, c)} bytes)")
    own = bytearray(buf)
    at_scores = HEADER.size + 16 * n
    at_features = at_scores + 4 * n
    at_cls = at_features + 2 * n * d
    return RegionRecord(
        boxes=np.ndarray((n, 4), BOX_DTYPE, own, HEADER.size),
        scores=np.ndarray((n,), SCORE_DTYPE, own, at_scores),
        features=np.ndarray((n, d), FEATURE_DTYPE, own, at_features),
        cls_probs=np.ndarray((n, c), CLS_DTYPE, own, at_cls),
        image_w=w or None, image_h=h or None)


def _corrupt(image_id, path, detail) -> StoreError:
    return StoreError(f"record for image {image_id!r} in {path} is corrupt: {detail}")
