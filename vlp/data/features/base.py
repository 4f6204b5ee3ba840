"""What every region store shares: id keys, a handle opened lazily in each process, pickling."""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Iterator, Mapping

import numpy as np

from vlp.data.features.errors import MissingImageError
from vlp.data.features.record import RegionRecord, check_record


def image_key(image_id) -> str:
    """Store key of an image id: ids are strings (VLP used the file stem); ints become str."""
    if isinstance(image_id, str):
        return image_id
    if isinstance(image_id, (int, np.integer)) and not isinstance(image_id, bool):
        return str(int(image_id))
    if isinstance(image_id, bytes):
        return image_id.decode("utf-8")
    raise TypeError(f"image ids are str or int, got {type(image_id).__name__} {image_id!r}")


class RegionStore(Mapping):
    """Read-only mapping image id -> RegionRecord.

    The file handle is opened on first use in each process and never crosses a fork:
    a DataLoader worker that inherits (or unpickles) the store opens its own. Subclasses
    implement `_open`, `_read`, `_has` and `_ids`; `_open` returns the handle.
    """

    # Whether reads scan every feature value for NaN/inf (see check_record's `values`).
    default_check_values = True

    def __init__(self, path, check_values: bool | None = None):
        self.path = str(path)
        self.check_values = self.default_check_values if check_values is None else check_values
        self._handle = None
        self._pid = None

    # -- per-process handle -------------------------------------------------------------
    def _here(self):
        if self._handle is None or self._pid != os.getpid():
            if self._handle is not None:  # inherited through fork: never use it here
                self._drop_inherited(self._handle)
                self._handle = None
            self._handle = self._open()
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._close(self._handle)
        self._handle = None
        self._pid = None

    def _close(self, handle) -> None:
        handle.close()

    def _drop_inherited(self, handle) -> None:
        """Release what a forked child inherited without touching the parent's state."""

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_pid"] = None
        return state

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may already be gone
            pass

    # -- mapping --------------------------------------------------------------------------
    def __getitem__(self, image_id) -> RegionRecord:
        key = image_key(image_id)
        record = self._read(self._here(), key)
        if record is None:
            raise MissingImageError(key, self.path)
        self._check(record, key)
        return record

    def _check(self, record: RegionRecord, key: str) -> None:
        check_record(record, key, values=self.check_values, where=self.path,
                     feature_dim=getattr(self, "feature_dim", None),
                     num_classes=getattr(self, "num_classes", None))

    def __contains__(self, image_id) -> bool:
        try:
            key = image_key(image_id)
        except TypeError:
            return False
        return self._has(self._here(), key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids(self._here()))

    def __len__(self) -> int:
        return self._len(self._here())

    def _len(self, handle) -> int:
        return sum(1 for _ in self._ids(handle))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    # -- for subclasses -------------------------------------------------------------------
    @abstractmethod
    def _open(self):
        ...

    @abstractmethod
    def _read(self, handle, key: str) -> RegionRecord | None:
        ...

    @abstractmethod
    def _has(self, handle, key: str) -> bool:
        ...

    @abstractmethod
    def _ids(self, handle):
        ...

