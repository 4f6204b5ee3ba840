"""HDF5 region store writer (layout in h5_layout).

Crash safety: each batch opens the file, appends, flushes and closes it, with the
metadata cache's evictions off, so between flushes nothing reaches the disk but raw
chunks past the committed rows (uncompressed chunks never move, and the last partial
chunk is rewritten with the same committed bytes). A killed writer leaves the file as
of its last flush; reopening keeps the records the index shows whole.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from vlp.data.features import h5_layout as layout
from vlp.data.features.errors import StoreError
from vlp.data.features.record import BOX_DTYPE, CLS_DTYPE, FEATURE_DTYPE, SCORE_DTYPE
from vlp.data.features.writer import RegionWriter


class H5Writer(RegionWriter):
    """Writer of an HDF5 region store; one open-append-flush-close per batch."""

    def __init__(self, path, batch_size: int = 256, feature_dim: int | None = None,
                 num_classes: int | None = None):
        path = str(path)
        if os.path.exists(path):
            dims, state = _resume(path)
        else:
            dims, state = (None, None), (0, 0, 0, [])
            _create_empty(path)
        for name, have, want in zip(("feature_dim", "num_classes"), dims,
                                    (feature_dim, num_classes)):
            if want is not None and have is not None and have != want:
                raise StoreError(f"{path} holds {name}={have}, asked for {want}")
        if dims[0] is None:
            dims = (feature_dim, num_classes)
        super().__init__(path, batch_size, *dims)
        self._count, self._rows, self._id_end, ids = state
        self._keys = set(ids)

    def _has_committed(self, key) -> bool:
        return key in self._keys

    def _count_committed(self) -> int:
        return self._count

    def _write_batch(self, items) -> None:
        records = [rec for _, rec in items]
        counts = np.array([r.num_regions for r in records], dtype=np.int64)
        id_raw = [key.encode("utf-8") for key, _ in items]
        id_lens = np.array([len(b) for b in id_raw], dtype=np.int64)
        index = np.zeros((len(items), 6), np.int64)
        index[:, 0] = self._rows + np.concatenate([[0], np.cumsum(counts)[:-1]])
        index[:, 1] = counts
        index[:, 2] = [r.image_w or 0 for r in records]
        index[:, 3] = [r.image_h or 0 for r in records]
        index[:, 4] = self._id_end + np.concatenate([[0], np.cumsum(id_lens)[:-1]])
        index[:, 5] = id_lens
        columns = {name: np.concatenate([getattr(r, name) for r in records])
                   for name in layout.ROW_DATASETS}
        columns["index"] = index
        columns["id_bytes"] = np.frombuffer(b"".join(id_raw), dtype=np.uint8)
        with layout.open_file(self.path, "a") as f:
            if int(f.attrs["num_records"]) != self._count:
                # The file is only held during a batch, so a second writer would
                # interleave its batches with ours and both indexes would be wrong.
                raise StoreError(f"{self.path} changed under this writer (another process "
                                 "writing to it?); stopped before adding to it")
            _hold_metadata_until_flush(f)
            self._ensure_datasets(f)
            for name, data in columns.items():
                if name in f:
                    _append(f[name], data)
            f.attrs["num_records"] = self._count + len(items)
            f.attrs["feature_dim"], f.attrs["num_classes"] = self.feature_dim, self.num_classes
            f.flush()
        self._count += len(items)
        self._rows += int(counts.sum())
        self._id_end += int(id_lens.sum())
        self._keys.update(key for key, _ in items)

    def _ensure_datasets(self, f: h5py.File) -> None:
        if "index" in f:
            return
        d, c = self.feature_dim, self.num_classes
        specs = {"features": ((d,), FEATURE_DTYPE), "boxes": ((4,), BOX_DTYPE),
                 "scores": ((), SCORE_DTYPE), "index": ((6,), np.int64),
                 "id_bytes": ((), np.uint8)}
        if c:
            specs["cls_probs"] = ((c,), CLS_DTYPE)
        for name, (tail, dtype) in specs.items():
            row_bytes = int(np.prod(tail, dtype=np.int64)) * np.dtype(dtype).itemsize
            f.create_dataset(name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype,
                             chunks=(layout.chunk_rows(row_bytes), *tail), fill_time="never")
        f["index"].attrs["columns"] = ",".join(layout.INDEX_COLUMNS)

    def _close(self) -> None:
        pass  # the file is only open inside _write_batch


def _resume(path):
    """Dims and (records, rows, id bytes, ids) of the whole records; cut off the rest."""
    with layout.open_file(path, "a") as f:
        layout.check_format(f, path)
        count = layout.whole_records(f, path)
        if count == 0:
            return layout.dims(f), (0, 0, 0, [])
        index = f["index"][:count]
        rows = int(index[-1, 0] + index[-1, 1])
        id_end = int(index[-1, 4] + index[-1, 5])
        blob = f["id_bytes"][:id_end]
        ids = [blob[s:s + n].tobytes().decode("utf-8") for s, n in index[:, 4:6]]
        for name in layout.ROW_DATASETS:
            if name in f:
                f[name].resize(rows, axis=0)
        f["index"].resize(count, axis=0)
        f["id_bytes"].resize(id_end, axis=0)
        f.attrs["num_records"] = count
        return layout.dims(f), (count, rows, id_end, ids)


def _create_empty(path: str) -> None:
    # Built aside and renamed into place: a kill while creating leaves no half file.
    tmp = f"{path}.tmp-{os.getpid()}"
    with h5py.File(tmp, "w", libver="earliest") as f:
        f.attrs.update(format=layout.FORMAT, version=layout.VERSION, feature_dim=-1,
                       num_classes=-1, num_records=0)
    os.replace(tmp, path)


def _append(ds: h5py.Dataset, data: np.ndarray) -> None:
    start = ds.shape[0]
    ds.resize(start + data.shape[0], axis=0)
    ds[start:] = data


def _hold_metadata_until_flush(f: h5py.File) -> None:
    """Keep HDF5 from writing metadata before flush(): a kill then leaves the last flush."""
    config = f.id.get_mdc_config()
    config.evictions_enabled = False
    # HDF5 accepts disabled evictions only with automatic cache resizing off.
    config.incr_mode = config.flash_incr_mode = config.decr_mode = 0
    f.id.set_mdc_config(config)
