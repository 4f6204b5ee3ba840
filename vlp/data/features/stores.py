"""open_store / create_store: one entry point for every region feature format."""

from __future__ import annotations

import json
import os

from vlp.data.features.base import RegionStore
from vlp.data.features.errors import StoreError
from vlp.data.features.writer import RegionWriter

READ_FORMATS = ("lmdb", "h5", "vlp-h5", "npy-dir")
WRITE_FORMATS = ("lmdb", "h5")
H5_SUFFIXES = (".h5", ".hdf5")


def open_store(path, format: str | None = None, *, bbox_file=None,
               check_values: bool | None = None) -> RegionStore:
    """Open region features read-only as a mapping image id -> RegionRecord.

    `path` is an LMDB store directory, an HDF5 store file, the shard prefix of VLP's
    release (`<prefix>_feat<XYZ>.h5`, with `bbox_file`), a directory of per-image .npy
    features (with `bbox_file`), or a JSON descriptor naming one of these:
    `{"format": "vlp-h5", "path": "<prefix>", "bbox_file": "<file>"}` (relative paths
    are taken from the descriptor's folder). `format` skips the detection.
    `check_values` scans every feature for NaN/inf on read (default: on for the
    formats read in place, off for the stores, whose writer checked them).
    """
    path = os.fspath(path)
    if format is None and path.endswith(".json") and os.path.isfile(path):
        return open_descriptor(path, check_values=check_values)
    format = format or detect_format(path)
    if format == "lmdb":
        from vlp.data.features.lmdb_store import LmdbStore
        return LmdbStore(path, check_values)
    if format == "h5":
        from vlp.data.features.h5_store import H5Store
        return H5Store(path, check_values)
    if format == "vlp-h5":
        from vlp.data.features.vlp_h5 import VlpH5Store
        return VlpH5Store(path, bbox_file, check_values)
    if format == "npy-dir":
        from vlp.data.features.npy_dir import NpyDirStore
        return NpyDirStore(path, bbox_file, check_values)
    raise StoreError(f"unknown feature format {format!r} (choose from {', '.join(READ_FORMATS)})")


def open_descriptor(path, check_values: bool | None = None) -> RegionStore:
    try:
        with open(path) as f:
            spec = json.load(f)
        target, fmt = spec["path"], spec["format"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StoreError(f"feature descriptor {path} must be JSON with 'format' and 'path' "
                         f"({type(err).__name__}: {err})") from None
    here = os.path.dirname(os.path.abspath(path))
    bbox = spec.get("bbox_file")
    return open_store(os.path.join(here, target), fmt, check_values=check_values,
                      bbox_file=None if bbox is None else os.path.join(here, bbox))


def detect_format(path: str) -> str:
    """Which reader fits `path`; StoreError saying what was expected when none does."""
    from vlp.data.features import h5_layout, lmdb_store, vlp_h5

    if os.path.isdir(path):
        if lmdb_store.is_lmdb_store(path):
            return "lmdb"
        if any(name.endswith(".npy") for _, _, names in os.walk(path) for name in names):
            return "npy-dir"
        raise StoreError(f"{path} is a directory with neither an LMDB store (data.mdb) nor "
                         "<id>.npy features")
    if os.path.isfile(path):
        if path.endswith(".tsv"):
            raise StoreError(f"{path}: BUTD TSV files are read front to back, not by id; "
                             "convert them with `vlp convert-features --from butd-tsv`")
        if h5_layout.is_h5_file(path):
            return "h5"
        raise StoreError(f"{path} is neither an HDF5 feature store nor a JSON descriptor "
                         "(a truncated or corrupt file reads like this too)")
    if vlp_h5.has_shards(path):
        return "vlp-h5"
    raise StoreError(f"no feature store at {path} (nor VLP shards {path}_feat<XYZ>.h5)")


def create_store(path, format: str | None = None, *, batch_size: int = 256,
                 feature_dim: int | None = None, num_classes: int | None = None,
                 map_size: int | None = None) -> RegionWriter:
    """A writer for a new store at `path`, or one resuming the store already there.

    format: "lmdb" (a directory; the default) or "h5" (one file; the default for paths
    ending in .h5/.hdf5). Use it as a context manager: batches of `batch_size` records
    commit atomically, and leaving the block commits the rest. `feature_dim` and
    `num_classes` pin the dims (otherwise the first record sets them); `map_size` is
    LMDB's starting map size in bytes (it doubles whenever a batch does not fit).
    """
    path = os.fspath(path)
    if format is None:
        format = "h5" if path.lower().endswith(H5_SUFFIXES) else "lmdb"
    if format == "lmdb":
        from vlp.data.features.lmdb_store import LmdbWriter
        if os.path.exists(path) and not os.path.isdir(path):
            raise StoreError(f"{path} exists and is not a directory, so not an LMDB store")
        if os.path.isdir(path) and os.listdir(path) and not os.path.isfile(
                os.path.join(path, "data.mdb")):
            raise StoreError(f"{path} is a non-empty directory without an LMDB store in it")
        return LmdbWriter(path, batch_size=batch_size, map_size=map_size,
                          feature_dim=feature_dim, num_classes=num_classes)
    if format == "h5":
        from vlp.data.features.h5_writer import H5Writer
        if os.path.isdir(path):
            raise StoreError(f"{path} is a directory; an HDF5 store is one file")
        return H5Writer(path, batch_size=batch_size, feature_dim=feature_dim,
                        num_classes=num_classes)
    raise StoreError(f"cannot write feature format {format!r} "
                     f"(choose from {', '.join(WRITE_FORMATS)})")
