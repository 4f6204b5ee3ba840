"""HDF5 region store reader (layout in h5_layout, writer in h5_writer).

At open, each process hashes the ids (keeping 12 bytes per image) and asks HDF5 where
every chunk of the datasets lies; a read is then plain preads of the image's index
entry, its id and its rows, with no HDF5 call and no cache, so memory stays flat however
many reads and grows by 12 bytes per image with the store. Files written by other tools
with compressed or oddly chunked datasets fall back to h5py slicing.
"""

from __future__ import annotations

import os
import struct

import h5py
import numpy as np

from vlp.data.features import h5_layout as layout
from vlp.data.features.base import RegionStore
from vlp.data.features.errors import StoreError
from vlp.data.features.record import CLS_DTYPE, RegionRecord

_PREAD = hasattr(os, "preadv")
_ENTRY, _ENTRY_DTYPE = struct.Struct("<6q"), np.dtype("<i8")


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

    def read_bytes(self, start: int, n: int, where: str) -> bytes:
        """The raw bytes of rows [start, start + n): one pread where they share a chunk."""
        if self.ds is not None or (start % self.rows) + n > self.rows:
            return self.read(start, n, where).tobytes()
        chunk, within = divmod(start, self.rows)
        size = n * self.row_bytes
        data = os.pread(self.fd, size, int(self.offsets[chunk]) + within * self.row_bytes)
        if len(data) != size:
            raise StoreError(f"{where}: the file ends inside a record (truncated)")
        return data


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
    """Image id -> index entry, in 12 bytes per image: each id's hash, sorted, and where
    the id sits in the index. A lookup reads the entry and the id bytes it points at
    from the file, so a hash shared by two ids (or by an absent one) is never mistaken.

    Plain arrays, not a handle: built once in the process that opens the store and
    shared copy-on-write with forked workers, which hash alike (never pickled: a
    spawned process hashes differently and builds its own).
    """

    def __init__(self, f: h5py.File, count: int):
        hashes = np.empty(count, np.int64)
        self.rows_used = self.id_end = 0
        for start, index in layout.index_blocks(f, count):
            hashes[start:start + len(index)] = self._hash_ids(f, index)
            self.rows_used = int(index[-1, 0] + index[-1, 1])
        # Sorted hashes and positions: 12 bytes per id where a dict of a million str keys
        # takes ~100 MB, and numpy pages stay shared after fork (no refcounts).
        order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[order]
        self.order = order.astype(np.uint32 if count < 2**32 else np.int64)

    def _hash_ids(self, f: h5py.File, index: np.ndarray) -> list[int]:
        starts, ends = index[:, 4], index[:, 4] + index[:, 5]
        lo, hi = int(starts.min()), int(ends.max())
        self.id_end = max(self.id_end, hi)
        blob = f["id_bytes"][lo:hi].tobytes()
        return [hash(blob[a:b]) for a, b in zip((starts - lo).tolist(), (ends - lo).tolist())]

    def entry(self, handle: "_Handle", key: str, where: str) -> list[int] | None:
        """The index entry of `key` (row, count, w, h, id start, id length), or None."""
        raw = key.encode("utf-8")
        h = hash(raw)
        i = int(np.searchsorted(self.hashes, h))
        while i < len(self.hashes) and self.hashes[i] == h:
            entry = handle.entry(int(self.order[i]), where)
            if handle.readers["id_bytes"].read_bytes(entry[4], entry[5], where) == raw:
                return entry
            i += 1
        return None

    def rows(self) -> dict[str, int]:
        """Rows used of each dataset, for the handle's chunk maps."""
        used = {name: self.rows_used for name in layout.ROW_DATASETS}
        return dict(used, index=len(self.hashes), id_bytes=self.id_end)


class _Handle:
    """One process's open file: a descriptor and a reader per dataset."""

    def __init__(self, path, rows_used: dict[str, int]):
        self.path = path
        self.file = layout.open_file(path, "r")
        self.fd = os.open(path, os.O_RDONLY) if _PREAD else None
        self.readers = {name: _RowReader(self.file[name], self.fd, rows)
                        for name, rows in rows_used.items() if name in self.file}
        if all(r.ds is None for r in self.readers.values()):
            self.file.close()  # every read is a pread now; HDF5 holds nothing for us

    def read(self, name: str, start: int, n: int, where: str) -> np.ndarray:
        return self.readers[name].read(start, n, where)

    def entry(self, position: int, where: str) -> list[int]:
        """Index entry `position`: row, count, image_w, image_h, id start, id length."""
        index = self.readers["index"]
        if index.dtype == _ENTRY_DTYPE:  # as written here; struct is 5x faster than numpy
            return list(_ENTRY.unpack(index.read_bytes(position, 1, where)))
        return index.read(position, 1, where)[0].tolist()

    def ids_in_order(self, count: int):
        """Ids in the order they were written, read a block at a time."""
        where = f"the image ids in {self.path}"
        for start in range(0, count, layout.INDEX_BLOCK):
            index = self.read("index", start, min(layout.INDEX_BLOCK, count - start), where)
            lo, hi = int(index[:, 4].min()), int((index[:, 4] + index[:, 5]).max())
            blob = self.read("id_bytes", lo, hi - lo, where).tobytes()
            for a, n in (index[:, 4:6] - [lo, 0]).tolist():
                yield blob[a:a + n].decode("utf-8")

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
        return _Handle(self.path, self._index_here().rows())

    def _drop_inherited(self, handle: _Handle) -> None:
        if handle.fd is not None:
            os.close(handle.fd)  # the child's copy of the descriptor

    def _read(self, handle: _Handle, key: str):
        where = f"image {key!r} in {self.path}"
        try:
            entry = self._index_here().entry(handle, key, where)
            if entry is None:
                return None
            row, n, w, h = entry[:4]
            readers = handle.readers
            cls = readers["cls_probs"].read(row, n, where) if "cls_probs" in readers \
                else np.zeros((n, 0), CLS_DTYPE)
            return RegionRecord(boxes=readers["boxes"].read(row, n, where),
                                features=readers["features"].read(row, n, where),
                                cls_probs=cls, scores=readers["scores"].read(row, n, where),
                                image_w=w or None, image_h=h or None)
        except OSError as err:
            raise StoreError(f"cannot read {where}: {err}") from None

    def _has(self, handle: _Handle, key: str) -> bool:
        where = f"image {key!r} in {self.path}"
        try:
            return self._index_here().entry(handle, key, where) is not None
        except OSError as err:
            raise StoreError(f"cannot read {where}: {err}") from None

    def _ids(self, handle: _Handle):
        return handle.ids_in_order(self._count)

    def _len(self, handle) -> int:
        return self._count
