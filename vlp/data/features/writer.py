"""What every store writer shares: validation, batching, resume, a consistent exit."""

from __future__ import annotations

from abc import ABC, abstractmethod

from vlp.data.features.base import image_key
from vlp.data.features.errors import RecordError, StoreError
from vlp.data.features.record import RegionRecord, check_record

MAX_KEY_BYTES = 511  # LMDB's key limit; HDF5 stores keep the same rule so files convert


class RegionWriter(ABC):
    """Append records to a store: `put` buffers, every `batch_size` puts commit together.

    A record is durable once its batch commits (`commit()`, a full batch, or leaving the
    `with` block, also on an exception). A process killed mid-way leaves every earlier
    batch intact and no trace of the interrupted one; reopening with `create_store`
    resumes, and `has(image_id)` tells what is already there.
    """

    def __init__(self, path, batch_size: int, feature_dim: int | None,
                 num_classes: int | None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.path = str(path)
        self.batch_size = batch_size
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self._pending: dict[str, RegionRecord] = {}
        self._closed = False

    def has(self, image_id) -> bool:
        key = image_key(image_id)
        return key in self._pending or self._has_committed(key)

    def put(self, image_id, record: RegionRecord) -> None:
        """Validate and queue one record; RecordError (a ValueError) if it is malformed."""
        if self._closed:
            raise StoreError(f"writer for {self.path} is closed")
        key = _checked_key(image_id)
        if self.has(key):
            raise StoreError(f"image {key!r} is already in {self.path}; stores are append-only "
                             "(skip ids for which has() is true to resume)")
        stored = _stored(record, key)
        check_record(stored, key, feature_dim=self.feature_dim, num_classes=self.num_classes)
        if self.feature_dim is None:
            self.feature_dim, self.num_classes = stored.feature_dim, stored.num_classes
        self._pending[key] = stored
        if len(self._pending) >= self.batch_size:
            self.commit()

    def commit(self) -> None:
        """Write the queued records in one transaction."""
        if self._pending:
            self._write_batch(list(self._pending.items()))
            self._pending.clear()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.commit()
        finally:
            self._closed = True
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        # Queued records are complete and valid: keep them, but let the original error,
        # not a second one from a failing commit, reach the caller.
        try:
            self.commit()
        except Exception as failed:
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(f"the last {len(self._pending)} queued records were not "
                             f"written to {self.path}: {failed}")
        self._closed = True
        self._close()

    def __len__(self) -> int:
        return self._count_committed() + len(self._pending)

    # -- for subclasses -------------------------------------------------------------------
    @abstractmethod
    def _has_committed(self, key: str) -> bool:
        ...

    @abstractmethod
    def _count_committed(self) -> int:
        ...

    @abstractmethod
    def _write_batch(self, items: list[tuple[str, RegionRecord]]) -> None:
        ...

    @abstractmethod
    def _close(self) -> None:
        ...


def _checked_key(image_id) -> str:
    key = image_key(image_id)
    size = len(key.encode("utf-8"))
    if size == 0 or size > MAX_KEY_BYTES or "\x00" in key:
        raise RecordError(f"image id {key!r}: ids must be 1 to {MAX_KEY_BYTES} bytes of UTF-8 "
                          "without NUL")
    return key


def _stored(record, key: str) -> RegionRecord:
    if not isinstance(record, RegionRecord):
        raise RecordError(f"image {key!r}: expected a RegionRecord, got {type(record).__name__}")
    try:
        return record.stored()
    except (TypeError, ValueError) as err:
        raise RecordError(f"image {key!r}: {err}") from None
