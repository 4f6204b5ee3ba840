"""VLP's released region features, read in place.

Layout: `<prefix>_feat<XYZ>.h5` and `<prefix>_cls<XYZ>.h5`, where XYZ is the last three
characters of the image id, holding one dataset per image ([100, 2048] fc6 features and
[100, 1601] class probabilities), plus one merged box file with a [100, 6] dataset per
image: x1, y1, x2, y2 (pixels), class, confidence. No image size was stored.
"""

from __future__ import annotations

import glob
import os
import re
from collections import OrderedDict

import h5py
import numpy as np

from vlp.data.features.base import RegionStore
from vlp.data.features.errors import MissingImageError, RecordError, StoreError
from vlp.data.features.record import RegionRecord, as_read

SHARD = re.compile(r"_(feat|cls)(.{3})\.h5$")
FULL_RELEASE = 1000


def shard_files(prefix: str) -> dict[str, dict[str, str]]:
    """{'feat': {XYZ: path}, 'cls': {XYZ: path}} for the shards next to `prefix`."""
    found = {"feat": {}, "cls": {}}
    for path in glob.glob(glob.escape(prefix) + "_*.h5"):
        match = SHARD.search(path[len(prefix):])
        if match and path[len(prefix):] == match.group(0):
            found[match.group(1)][match.group(2)] = path
    return found


def has_shards(prefix: str) -> bool:
    return bool(shard_files(prefix)["feat"])


def _h5(path) -> h5py.File:
    try:
        return h5py.File(path, "r", rdcc_nbytes=0, locking="best-effort")
    except OSError as err:
        raise StoreError(f"cannot open {path}: {err}") from None


class VlpH5Store(RegionStore):
    """VLP's sharded HDF5 features as a read-only store (records have no image size, so
    use box_class_vector(..., box_norm='lazy')). Keeps at most `max_open` shard pairs
    open per process; every value is checked on read."""

    def __init__(self, prefix, bbox_file, check_values: bool | None = None,
                 max_open: int = 32):
        super().__init__(prefix, check_values)
        if bbox_file is None:
            raise StoreError(f"VLP features at {prefix} need their merged box file "
                             "(bbox_file=..., e.g. ..._detection_vg_..._trainvaltest.h5)")
        if not os.path.isfile(bbox_file):
            raise StoreError(f"VLP box file {bbox_file} does not exist")
        shards = shard_files(self.path)
        if not shards["feat"]:
            raise StoreError(f"no VLP feature shards {self.path}_feat<XYZ>.h5")
        _check_pairs(self.path, shards)
        self.bbox_file = str(bbox_file)
        self.shards = shards
        self.max_open = max_open
        self.feature_dim = self.num_classes = None
        self._count = None

    def _open(self):
        return {"bbox": _h5(self.bbox_file), "open": OrderedDict()}

    def _close(self, handle) -> None:
        for feat, cls in handle["open"].values():
            feat.close()
            cls.close()
        handle["bbox"].close()

    def _shard(self, handle, suffix):
        pair = handle["open"].pop(suffix, None)
        if pair is None:
            pair = (_h5(self.shards["feat"][suffix]), _h5(self.shards["cls"][suffix]))
            if len(handle["open"]) >= self.max_open:
                for old in handle["open"].popitem(last=False)[1]:
                    old.close()
        handle["open"][suffix] = pair  # most recently used last
        return pair

    def _read(self, handle, key):
        suffix = key[-3:]
        if suffix not in self.shards["feat"]:
            raise MissingImageError(key, self.path, f"no shard {self.path}_feat{suffix}.h5")
        feat, cls = self._shard(handle, suffix)
        if key not in feat:
            return None
        for f in (cls, handle["bbox"]):
            if key not in f:
                raise MissingImageError(key, self.path, f"missing from {f.filename}")
        try:
            boxes6 = np.asarray(handle["bbox"][key][()], dtype=np.float32)
            features, cls_probs = as_read(feat[key][()]), as_read(cls[key][()])
        except (OSError, TypeError, ValueError) as err:
            raise RecordError(f"image {key!r} in {self.path}: unreadable ({err})") from None
        return record_from_box_file(key, self.bbox_file, boxes6, features, cls_probs)

    def _has(self, handle, key) -> bool:
        suffix = key[-3:]
        if suffix not in self.shards["feat"]:
            return False
        feat, cls = self._shard(handle, suffix)
        return key in feat and key in cls and key in handle["bbox"]

    def _ids(self, handle):
        for suffix in sorted(self.shards["feat"]):
            yield from list(self._shard(handle, suffix)[0].keys())

    def _len(self, handle) -> int:
        if self._count is None:
            self._count = sum(len(self._shard(handle, s)[0]) for s in self.shards["feat"])
        return self._count


def _check_pairs(prefix, shards) -> None:
    """Refuse a release whose shards went missing, naming the files."""
    feat, cls = set(shards["feat"]), set(shards["cls"])
    missing = [f"{prefix}_cls{s}.h5" for s in sorted(feat - cls)] + \
        [f"{prefix}_feat{s}.h5" for s in sorted(cls - feat)]
    numbered = all(s.isdigit() for s in feat | cls)
    if numbered and FULL_RELEASE * 0.9 <= len(feat | cls) < FULL_RELEASE:
        # The release numbers its shards 000-999; a few gaps mean lost downloads, not
        # images that happen not to exist.
        missing += [f"{prefix}_{kind}{s:03d}.h5" for s in range(FULL_RELEASE)
                    for kind in ("feat", "cls") if f"{s:03d}" not in feat | cls]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise StoreError(f"VLP features at {prefix}: {len(feat)} feature and {len(cls)} "
                         f"class shards; missing {', '.join(missing[:5])}{more}")


def record_from_box_file(key, bbox_file, boxes6, features, cls_probs) -> RegionRecord:
    """A record from VLP's merged box file row block [N, 6] (x1 y1 x2 y2 class score)."""
    if boxes6.ndim != 2 or boxes6.shape[1] != 6:
        raise RecordError(f"image {key!r} in {bbox_file}: boxes must be [N, 6], "
                          f"got {list(boxes6.shape)}")
    return RegionRecord(boxes=np.ascontiguousarray(boxes6[:, :4]), features=features,
                        cls_probs=cls_probs, scores=np.ascontiguousarray(boxes6[:, 5]))
