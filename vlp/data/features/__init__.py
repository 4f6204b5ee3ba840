"""Region features: one record type, LMDB and HDF5 stores, readers for existing releases.

    store = open_store("coco_regions.lmdb")          # mapping image id -> RegionRecord
    record = store["COCO_val2014_000000391895"]
    position = box_class_vector(record)              # [N, C + 6] model input

    with create_store("coco_regions.lmdb") as out:   # or "coco_regions.h5"
        out.put(image_id, record)
"""

from vlp.data.features.boxes import box_class_vector, box_sinusoids, layer_norm
from vlp.data.features.errors import MissingImageError, RecordError, StoreError
from vlp.data.features.record import RegionRecord, check_record
from vlp.data.features.stores import READ_FORMATS, WRITE_FORMATS, create_store, open_store

__all__ = [
    "READ_FORMATS", "WRITE_FORMATS", "MissingImageError", "RecordError", "RegionRecord",
    "StoreError", "box_class_vector", "box_sinusoids", "check_record", "create_store", "layer_norm",
    "open_store",
]
