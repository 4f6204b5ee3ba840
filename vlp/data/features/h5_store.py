"""HDF5 region store reader (layout in h5_layout, writer in h5_writer).

At open, each process reads the index and asks HDF5 where every chunk of the row
datasets lies; reads are then plain preads of the record's rows, with no HDF5 call and
no cache, so memory stays flat however many reads. Files written by other tools with
compressed or oddly chunked datasets fall back to h5py slicing.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from vlp.data.features import h5_layout as layout
from vlp.data.features.base import RegionStore
from vlp.data.features.errors import StoreError
from vlp.data.features.record import CLS_DTYPE, RegionRecord

_PREAD = hasattr(os, "preadv")


class _RowReader:
    """Rows [start, start + n) of one [R, ...] dataset chunked by whole rows."""

    def __init__(self, ds: h5py.Dataset, fd: int | None, rows: int):
        self.dtype, self.tail = ds.dtype, ds.shape[1:]
        self.row_bytes = int(np.prod(self.tail, dtype=np.int64)) * ds.dtype.itemsize
        self.fd = fd
        self.offsets = _chunk_offsets(ds, rows) if fd is not None else None
        self.rows = ds.chunks[0] if self.offsets is not None else 0
        self.ds = None if self.offsets is not None else ds

    def read(self, start: int, n: int, where: str) -> np.ndarray:
        if self.ds is not None:
            return self.ds[start:start + n]
        out = np.empty((n, *self.tail), self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        done, rb = 0, self.row_bytes
        while done < n:
            chunk, within = divmod(start + done, self.rows)
            take = min(n - done, self.rows - within)
            part = view[done * rb:(done + take) * rb]
            if os.preadv(self.fd, [part], int(self.offsets[chunk]) + within * rb) != len(part):
                raise StoreError(f"{where}: the file ends inside a record (truncated)")
            done += take
        return out


def _chunk_offsets(ds: h5py.Dataset, rows_used: int) -> np.ndarray | None:
    """File offset of each chunk holding the first `rows_used` rows, or None where
    chunks are not raw whole-row bytes."""
    if ds.chunks is None or ds.chunks[1:] != ds.shape[1:] \
            or ds.id.get_create_plist().get_nfilters() or not hasattr(ds.id, "chunk_iter"):
        return None
    rows = ds.chunks[0]
    offsets = np.full(-(-rows_used // rows), -1, np.int64)

    def visit(info):
        if info.filter_mask == 0 and info.chunk_offset[0] // rows < len(offsets):
            offsets[info.chunk_offset[0] // rows] = info.byte_offset

    ds.id.chunk_iter(visit)
    return None if (offsets < 0).any() else offsets


class _Index:
    """Image id -> rows. Plain arrays, not a handle: loaded once in the process that opens
    the store and shared copy-on-write with forked workers (never pickled)."""

    def __init__(self, f: h5py.File, count: int):
        if count:
            index = f["index"][:count]
            blob = f["id_bytes"][: int(index[-1, 4] + index[-1, 5])]
        else:
            index, blob = np.zeros((0, 6), np.int64), np.zeros(0, np.uint8)
        self.rows = index[:, :4].copy()  # row, count, image_w, image_h
        self.rows_used = int(index[-1, 0] + index[-1, 1]) if count else 0
        raw = [blob[s:s + n].tobytes() for s, n in index[:, 4:6].tolist()]
        # Sorted fixed-width bytes: a few bytes per id where a dict of a million str
        # keys takes ~100 MB, and numpy pages stay shared after fork (no refcounts).
        ids = np.array(raw or [b""], dtype=bytes)[:count]
        self.order = np.argsort(ids, kind="stable")
        self.sorted_ids = ids[self.order]

    def position(self, key: str) -> int | None:
        raw = key.encode("utf-8")
        i = int(np.searchsorted(self.sorted_ids, raw))
        if i < len(self.sorted_ids) and self.sorted_ids[i] == raw:
            return int(self.order[i])
        return None

    def ids_in_order(self):
        """Ids in the order they were written."""
        written = np.empty_like(self.sorted_ids)
        written[self.order] = self.sorted_ids
        return (raw.decode("utf-8") for raw in written.tolist())


class _Handle:
    """One process's open file: a descriptor and a reader per row dataset."""

    def __init__(self, path, rows_used: int):
        self.file = layout.open_file(path, "r")
        self.fd = os.open(path, os.O_RDONLY) if _PREAD else None
        self.readers = {name: _RowReader(self.file[name], self.fd, rows_used)
                        for name in layout.ROW_DATASETS if name in self.file}
        if all(r.ds is None for r in self.readers.values()):
            self.file.close()  # every read is a pread now; HDF5 holds nothing for us

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.file.close()


class H5Store(RegionStore):
    """Read-only HDF5 region store. Values were checked when written, so reads skip the
    NaN/inf scan of the features by default (check_values=True scans them too)."""

    default_check_values = False

    def __init__(self, path, check_values: bool | None = None):
        super().__init__(path, check_values)
        if not os.path.isfile(self.path):
            raise StoreError(f"no HDF5 feature store at {self.path}")
        with layout.open_file(self.path, "r") as f:
            layout.check_format(f, self.path)
            self.feature_dim, self.num_classes = layout.dims(f)
            self._count = layout.whole_records(f, self.path)
            self._index = _Index(f, self._count)

    def __getstate__(self):
        state = super().__getstate__()
        state["_index"] = None  # cheaper to reread from the file than to pickle
        return state

    def _index_here(self) -> _Index:
        if self._index is None:
            with layout.open_file(self.path, "r") as f:
                self._index = _Index(f, self._count)
        return self._index

    def _open(self):
        return _Handle(self.path, self._index_here().rows_used)

    def _drop_inherited(self, handle: _Handle) -> None:
        if handle.fd is not None:
            os.close(handle.fd)  # the child's copy of the descriptor

    def _read(self, handle: _Handle, key: str):
        index = self._index_here()
        pos = index.position(key)
        if pos is None:
            return None
        row, n, w, h = index.rows[pos].tolist()
        where = f"image {key!r} in {self.path}"
        readers = handle.readers
        try:
            cls = readers["cls_probs"].read(row, n, where) if "cls_probs" in readers \
                else np.zeros((n, 0), CLS_DTYPE)
            return RegionRecord(boxes=readers["boxes"].read(row, n, where),
                                features=readers["features"].read(row, n, where),
                                cls_probs=cls, scores=readers["scores"].read(row, n, where),
                                image_w=w or None, image_h=h or None)
        except OSError as err:
            raise StoreError(f"cannot read {where}: {err}") from None

    def _has(self, handle: _Handle, key: str) -> bool:
        return self._index_here().position(key) is not None

    def _ids(self, handle: _Handle):
        return self._index_here().ids_in_order()

    def _len(self, handle) -> int:
        return self._count
