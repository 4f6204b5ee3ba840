"""Per-example arrays kept in files under output_dir/cache and memory-mapped read-only.

At Conceptual Captions scale (3.3 M captions) a dataset's token ids, image keys and answer
targets have millions of entries. As numpy arrays mapped from files they cost a forked
DataLoader worker nothing: there are no Python objects whose reference counts a read would
write, so no page is copied. A spawn- or forkserver-started worker unpickles only the
folder's path and maps the same pages.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np


def save_arrays(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """`arrays` as folder/<name>.npy, all or nothing: written to a temporary folder beside
    it, then renamed into place. When another process got there first, its folder stays."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-")
    try:
        for name, array in arrays.items():
            np.save(os.path.join(tmp, f"{name}.npy"), np.ascontiguousarray(array))
        os.rename(tmp, folder)
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_arrays(folder: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays `save_arrays` wrote, mapped read-only (as plain ndarrays)."""
    return {name: np.asarray(np.load(Path(folder) / f"{name}.npy", mmap_mode="r"))
            for name in names}


def digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        h.update(array.data)
    return h.hexdigest()[:20]


class MappedArrays:
    """Arrays named by `names`, held in memory (`source` None) or mapped from the folder
    `source`; mapped ones pickle as the folder's path and unpickle by mapping it again."""

    names: ClassVar[tuple[str, ...]]
    source: Path | None

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.names}

    @classmethod
    def open(cls, folder):
        folder = Path(folder)
        return cls(**load_arrays(folder, cls.names), source=folder)

    def mapped(self, cache_dir, prefix: str):
        """The same arrays mapped from cache_dir/<prefix>-<digest of their contents>/,
        written there unless an earlier run (or another rank) did."""
        arrays = self.arrays()
        folder = Path(cache_dir).absolute() / f"{prefix}-{digest(arrays)}"
        if not folder.is_dir():
            save_arrays(folder, arrays)
        return type(self).open(folder)

    def __reduce_ex__(self, protocol):
        if self.source is None:
            return super().__reduce_ex__(protocol)
        return type(self).open, (str(self.source),)


def _flat_offsets(lengths) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


@dataclass(eq=False)
class KeyColumn(MappedArrays):
    """A string per example, many of them repeated (an image's key for each of its
    captions): example i's string is distinct string index[i], whose UTF-8 bytes are
    chars[offsets[j]:offsets[j + 1]]."""

    index: np.ndarray    # int32 (int64 past 2**31 distinct strings), one per example
    chars: np.ndarray    # uint8
    offsets: np.ndarray  # int64, distinct strings + 1
    source: Path | None = None
    names: ClassVar[tuple[str, ...]] = ("index", "chars", "offsets")

    @classmethod
    def of(cls, strings: Sequence[str]) -> "KeyColumn":
        table: dict[str, int] = {}
        index = np.fromiter((table.setdefault(s, len(table)) for s in strings), np.int64,
                            count=len(strings))
        encoded = [s.encode("utf-8") for s in table]
        chars = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        if len(table) < 2**31:
            index = index.astype(np.int32)
        return cls(index, chars, _flat_offsets([len(b) for b in encoded]))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> str:
        j = self.index[i]
        return self.chars[self.offsets[j]:self.offsets[j + 1]].tobytes().decode("utf-8")


@dataclass(eq=False)
class SoftTargets(MappedArrays):
    """VQA soft targets, flat: question i's are {answers[k]: scores[k]} for k in
    offsets[i]:offsets[i + 1], in the order they were given."""

    answers: np.ndarray  # int64 answer indices
    scores: np.ndarray   # float64, so each score reads back exactly as built
    offsets: np.ndarray  # int64, questions + 1
    source: Path | None = None
    names: ClassVar[tuple[str, ...]] = ("answers", "scores", "offsets")

    @classmethod
    def of(cls, targets: Sequence[dict[int, float]]) -> "SoftTargets":
        count = sum(len(t) for t in targets)
        answers = np.fromiter((a for t in targets for a in t), np.int64, count=count)
        scores = np.fromiter((s for t in targets for s in t.values()), np.float64, count=count)
        return cls(answers, scores, _flat_offsets([len(t) for t in targets]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> dict[int, float]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return dict(zip(self.answers[a:b].tolist(), self.scores[a:b].tolist()))
