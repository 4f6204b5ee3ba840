"""Per-image .npy features, as VLP used for Flickr30k, read in place.

`<dir>/**/<id>.npy` holds [N, D] features and `<id>_cls_prob.npy` [N, C] class
probabilities; boxes come from VLP's merged box file ([N, 6] per image id: x1, y1, x2, y2,
class, confidence), as in VLP's loader. No image size is stored.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from vlp.data.features.base import RegionStore
from vlp.data.features.errors import MissingImageError, RecordError, StoreError
from vlp.data.features.record import as_read
from vlp.data.features.vlp_h5 import record_from_box_file

CLS_SUFFIX = "_cls_prob.npy"


def feature_files(directory) -> dict[str, str]:
    """{image id: path of its features}, searching sub-directories too."""
    found: dict[str, str] = {}
    for root, _, names in os.walk(directory):
        for name in names:
            if not name.endswith(".npy") or name.endswith(CLS_SUFFIX):
                continue
            key = name[:-len(".npy")]
            path = os.path.join(root, name)
            if key in found:
                raise StoreError(f"image id {key!r} has two feature files: {found[key]} "
                                 f"and {path}")
            found[key] = path
    return found


class NpyDirStore(RegionStore):
    """A directory of per-image .npy features plus VLP's box file, as a read-only store."""

    def __init__(self, directory, bbox_file, check_values: bool | None = None):
        super().__init__(directory, check_values)
        if not os.path.isdir(self.path):
            raise StoreError(f"no feature directory {self.path}")
        if bbox_file is None:
            raise StoreError(f"per-image .npy features in {self.path} need the merged box "
                             "file (bbox_file=...)")
        if not os.path.isfile(bbox_file):
            raise StoreError(f"box file {bbox_file} does not exist")
        self.bbox_file = str(bbox_file)
        self.files = feature_files(self.path)
        if not self.files:
            raise StoreError(f"no <id>.npy feature files under {self.path}")
        self.feature_dim = self.num_classes = None

    def _open(self):
        try:
            return h5py.File(self.bbox_file, "r", locking="best-effort")
        except OSError as err:
            raise StoreError(f"cannot open box file {self.bbox_file}: {err}") from None

    def _read(self, bbox, key):
        path = self.files.get(key)
        if path is None:
            return None
        if key not in bbox:
            raise MissingImageError(key, self.path, f"missing from {self.bbox_file}")
        cls_path = path[:-len(".npy")] + CLS_SUFFIX
        try:
            features, cls_probs = as_read(np.load(path)), as_read(np.load(cls_path))
            boxes6 = np.asarray(bbox[key][()], dtype=np.float32)
        except FileNotFoundError:
            raise RecordError(f"image {key!r}: no class probabilities file {cls_path}") from None
        except (OSError, ValueError) as err:
            raise RecordError(f"image {key!r}: unreadable features ({err})") from None
        return record_from_box_file(key, self.bbox_file, boxes6, features, cls_probs)

    def _has(self, bbox, key) -> bool:
        return key in self.files and key in bbox

    def _ids(self, bbox):
        return iter(sorted(self.files))

    def _len(self, bbox) -> int:
        return len(self.files)
