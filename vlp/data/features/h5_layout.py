"""The HDF5 region store's file layout, shared by its reader and writer.

One file; root attributes `format`, `version`, `feature_dim`, `num_classes`, `num_records`:
    features  [R, D] float16    regions of every image, one image after another
    cls_probs [R, C] float16    (absent when C = 0)
    boxes     [R, 4] float32
    scores    [R]    float32
    index     [M, 6] int64      per image: row, count, image_w, image_h, id_start, id_len
    id_bytes  [B]    uint8      the image ids, UTF-8, concatenated

A few big datasets instead of one per image: h5py's per-object overhead is what grew in
VLP's long runs, and a read becomes one slice of each. Chunks hold whole rows and are
never compressed, so the reader can fetch a record's bytes with plain preads.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from vlp.data.features.errors import StoreError

FORMAT = "vlp-regions"
VERSION = 1
INDEX_COLUMNS = ("row", "count", "image_w", "image_h", "id_start", "id_len")
ROW_DATASETS = ("features", "cls_probs", "boxes", "scores")
CHUNK_BYTES = 1 << 20
# Index entries read at a time: at most 1 MiB of 511-byte ids. Bigger blocks leave freed
# heap behind that malloc keeps, so an open's memory would grow with the store.
INDEX_BLOCK = 1 << 11


def is_h5_file(path) -> bool:
    return os.path.isfile(path) and h5py.is_hdf5(path)


def open_file(path, mode: str) -> h5py.File:
    try:
        # No chunk cache: random reads would copy each chunk twice and hold memory for it.
        return h5py.File(path, mode, rdcc_nbytes=0, locking="best-effort")
    except OSError as err:
        raise StoreError(f"cannot open HDF5 feature store {path}: {err}") from None


def check_format(f: h5py.File, path) -> None:
    if f.attrs.get("format") != FORMAT:
        raise StoreError(f"{path} is an HDF5 file but not a vlp region store (for VLP's "
                         "released shards pass the shard prefix with bbox_file=...)")
    if int(f.attrs.get("version", -1)) != VERSION:
        raise StoreError(f"{path}: unsupported store version {f.attrs.get('version')}")


def dims(f: h5py.File) -> tuple[int | None, int | None]:
    d, c = int(f.attrs["feature_dim"]), int(f.attrs["num_classes"])
    return (None, None) if d < 0 else (d, c)


def whole_records(f: h5py.File, path) -> int:
    """How many leading index entries point only at rows and id bytes that exist."""
    if "index" not in f:
        return 0
    try:
        count = min(int(f.attrs["num_records"]), f["index"].shape[0])
        if count == 0:
            return 0
        rows = min(f[name].shape[0] for name in ROW_DATASETS if name in f)
        id_bytes = f["id_bytes"].shape[0]
        expected = 0  # where the next record's rows must start
        for start, index in index_blocks(f, count):
            ends = index[:, 0] + index[:, 1]
            starts = np.concatenate([[expected], ends[:-1]])
            good = (index[:, 0] == starts) & (ends <= rows) & (index[:, 1] > 0) \
                & (index[:, 4] + index[:, 5] <= id_bytes)
            bad = np.flatnonzero(~good)
            if bad.size:
                return start + int(bad[0])
            expected = int(ends[-1])
    except (KeyError, OSError) as err:
        raise StoreError(f"HDF5 feature store {path} is damaged: {err}") from None
    return count


def index_blocks(f: h5py.File, count: int):
    """(first entry, entries) of the first `count` index entries, a block at a time, so
    that memory does not grow with the store."""
    for start in range(0, count, INDEX_BLOCK):
        yield start, f["index"][start:min(start + INDEX_BLOCK, count)]


def chunk_rows(row_bytes: int) -> int:
    return max(16, CHUNK_BYTES // max(row_bytes, 1))
