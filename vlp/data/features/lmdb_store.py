"""LMDB region store: a directory (data.mdb, lock.mdb); key = image id, value = codec bytes.

Two named databases: `records` and `meta` (one JSON value: format, version, dims). LMDB
commits are atomic, so a killed writer leaves exactly the batches it had committed.
"""

from __future__ import annotations

import json
import os

import lmdb

from vlp.data.features import codec
from vlp.data.features.base import RegionStore
from vlp.data.features.errors import StoreError
from vlp.data.features.writer import RegionWriter

FORMAT = "vlp-regions"
VERSION = 1
RECORDS, META = b"records", b"meta"
INITIAL_MAP_SIZE = 1 << 30  # virtual address space only; the file grows with the data


def is_lmdb_store(path) -> bool:
    return os.path.isfile(os.path.join(path, "data.mdb"))


def _open_env(path, readonly: bool, map_size: int | None = None):
    """Open the environment and refuse a truncated data file before any page is touched."""
    data = os.path.join(path, "data.mdb")
    if readonly and not os.path.isfile(data):
        raise StoreError(f"no LMDB feature store at {path} (expected {data})")
    kwargs = dict(subdir=True, max_dbs=2, readahead=False, meminit=False)
    if readonly:
        kwargs.update(readonly=True, lock=False)
    else:
        kwargs.update(map_size=map_size or INITIAL_MAP_SIZE)
    try:
        env = lmdb.open(str(path), **kwargs)
    except lmdb.Error as err:
        raise StoreError(f"cannot open LMDB feature store {path}: {err}") from None
    # LMDB maps the file; a page past a truncated end would kill the process with SIGBUS.
    used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = os.path.getsize(data)
    if size < used:
        env.close()
        raise StoreError(f"LMDB feature store {path} is truncated: data.mdb has {size} "
                         f"bytes, its pages need {used}")
    return env


class _Shared:
    """One read-only environment per path and process, shared by every store object on it.

    py-lmdb refuses to open one environment twice in a process, and two store objects on
    one path are common (a train and a val dataset; a store and its unpickled copy).
    """

    envs: dict[str, list] = {}  # realpath -> [pid, env, records db, users]

    @classmethod
    def acquire(cls, path):
        key = os.path.realpath(path)
        entry = cls.envs.get(key)
        if entry is not None and entry[0] != os.getpid():
            # Inherited through fork. py-lmdb would refuse a second environment on these
            # files until this one is closed; closing a lock-free read-only environment
            # in the child unmaps only the child's copy.
            entry[1].close()
            entry = None
        if entry is None:
            env = _open_env(path, readonly=True)
            try:
                db = env.open_db(RECORDS, create=False)
            except lmdb.Error as err:
                env.close()
                raise StoreError(f"LMDB feature store {path} has no records table: {err}") \
                    from None
            entry = cls.envs[key] = [os.getpid(), env, db, 0]
        entry[3] += 1
        return entry[1], entry[2]

    @classmethod
    def release(cls, path) -> None:
        key = os.path.realpath(path)
        entry = cls.envs.get(key)
        if entry is not None and entry[0] == os.getpid():
            entry[3] -= 1
            if entry[3] <= 0:
                del cls.envs[key]
                entry[1].close()


def _read_meta(env, path) -> dict:
    try:
        meta_db = env.open_db(META, create=False)
        with env.begin(db=meta_db) as txn:
            raw = txn.get(b"info")
    except lmdb.NotFoundError:
        raw = None
    except lmdb.Error as err:
        raise StoreError(f"LMDB feature store {path} is corrupt: {err}") from None
    if raw is None:
        raise StoreError(f"{path} is an LMDB database but not a vlp region store (no meta)")
    meta = json.loads(bytes(raw))
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise StoreError(f"{path}: unsupported store format {meta.get('format')!r} "
                         f"version {meta.get('version')!r}")
    return meta


def _create_empty(path: str) -> None:
    """An empty store with its tables and meta, built aside and renamed into place so
    that a kill while creating leaves nothing to trip over."""
    tmp = f"{path.rstrip(os.sep)}.tmp-{os.getpid()}"
    env = lmdb.open(tmp, subdir=True, max_dbs=2, map_size=1 << 20)
    try:
        env.open_db(RECORDS)
        meta_db = env.open_db(META)
        meta = dict(format=FORMAT, version=VERSION, feature_dim=None, num_classes=None)
        with env.begin(write=True, db=meta_db) as txn:
            txn.put(b"info", json.dumps(meta).encode())
    finally:
        env.close()
    if os.path.isdir(path):  # an empty folder made by the user (create_store checks it)
        os.rmdir(path)
    os.replace(tmp, path)


class LmdbStore(RegionStore):
    """Read-only LMDB region store; opened with lock=False, readahead=False in each process.

    Values were checked when written, so reads skip the NaN/inf scan of the features by
    default (pass check_values=True to scan them too).
    """

    default_check_values = False

    def __init__(self, path, check_values: bool | None = None):
        super().__init__(path, check_values)
        env, _ = _Shared.acquire(self.path)
        try:
            meta = _read_meta(env, self.path)
        finally:
            _Shared.release(self.path)
        self.feature_dim = meta.get("feature_dim")
        self.num_classes = meta.get("num_classes")

    def _open(self):
        return _Shared.acquire(self.path)

    def _close(self, handle) -> None:
        _Shared.release(self.path)

    def _read(self, handle, key):
        env, db = handle
        with env.begin(db=db, buffers=True) as txn:
            buf = txn.get(key.encode("utf-8"))
            return None if buf is None else codec.decode(buf, key, self.path)

    def _has(self, handle, key) -> bool:
        env, db = handle
        with env.begin(db=db, buffers=True) as txn:
            return txn.get(key.encode("utf-8")) is not None

    def _ids(self, handle):
        env, db = handle
        with env.begin(db=db) as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                yield key.decode("utf-8")

    def _len(self, handle) -> int:
        env, db = handle
        with env.begin() as txn:
            return txn.stat(db)["entries"]


class LmdbWriter(RegionWriter):
    """Writer of an LMDB region store; one transaction per batch, map size grows itself."""

    def __init__(self, path, batch_size: int = 256, map_size: int | None = None,
                 feature_dim: int | None = None, num_classes: int | None = None):
        if os.path.realpath(path) in _Shared.envs:
            raise StoreError(f"{path} is open for reading in this process; close those "
                             "stores before writing to it")
        if not is_lmdb_store(path):
            _create_empty(path)
        self._env = _open_env(path, readonly=False, map_size=map_size)
        try:
            self._env.set_mapsize(max(self._env.info()["map_size"], map_size or 0))
            meta = self._init_meta(path, feature_dim, num_classes)
            self._meta_db = self._env.open_db(META)
            self._records = self._env.open_db(RECORDS)
        except BaseException:
            self._env.close()
            raise
        super().__init__(path, batch_size, meta["feature_dim"], meta["num_classes"])

    def _init_meta(self, path, feature_dim, num_classes) -> dict:
        meta = _read_meta(self._env, path)
        for name, want in (("feature_dim", feature_dim), ("num_classes", num_classes)):
            if want is not None and meta[name] is not None and meta[name] != want:
                raise StoreError(f"{path} holds {name}={meta[name]}, asked for {want}")
            if meta[name] is None:
                meta[name] = want
        return meta

    def _has_committed(self, key) -> bool:
        with self._env.begin(db=self._records, buffers=True) as txn:
            return txn.get(key.encode("utf-8")) is not None

    def _count_committed(self) -> int:
        with self._env.begin() as txn:
            return txn.stat(self._records)["entries"]

    def _write_batch(self, items) -> None:
        values = [(key.encode("utf-8"), codec.encode(rec)) for key, rec in items]
        meta = dict(format=FORMAT, version=VERSION, feature_dim=self.feature_dim,
                    num_classes=self.num_classes)
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    txn.put(b"info", json.dumps(meta).encode(), db=self._meta_db)
                    for key, value in values:
                        txn.put(key, value, db=self._records)
                return
            except lmdb.MapFullError:
                # The aborted transaction left nothing behind; grow and redo it.
                self._grow(sum(len(v) for _, v in values))

    def _grow(self, batch_bytes: int) -> None:
        size = self._env.info()["map_size"]
        self._env.set_mapsize(max(2 * size, size + 2 * batch_bytes))

    def _close(self) -> None:
        self._env.close()
