"""Where a run's region features come from, and which of its images they cover."""

from __future__ import annotations

from pathlib import Path

from vlp.data.features import open_store
from vlp.errors import VLPError

# VLP's defaults under --image_root (its COCO release).
VLP_BBOX_FILE = "coco_detection_vg_thresh0.2_feat_gvd_checkpoint_trainvaltest.h5"
VLP_DET_PREFIX = "feat_cls_1000/coco_detection_vg_100dets_gvd_checkpoint_trainval"


def add_feature_flags(group) -> None:
    """VLP's feature flags plus --features, shared by `vlp train` and `vlp decode`."""
    group.add_argument("--features", help="region store (LMDB, HDF5, VLP shards or a JSON "
                       "descriptor); replaces --image_root/--region_* lookups")
    group.add_argument("--image_root", default=None,
                       help="folder that --region_bbox_file and --region_det_file_prefix are in")
    group.add_argument("--region_bbox_file", default=VLP_BBOX_FILE)
    group.add_argument("--region_det_file_prefix", default=VLP_DET_PREFIX)
    group.add_argument("--enable_butd", action="store_true",
                       help="region features (the only mode; accepted for VLP's command lines)")
    group.add_argument("--box_norm", choices=("auto", "image", "lazy"), default="auto",
                       help="box coordinates over the image size, or VLP's largest-coordinate "
                       "estimate (auto: lazy only for records without an image size)")
    group.add_argument("--skip_missing_features", action="store_true",
                       help="leave out images that are not in the feature store")


def open_features(args):
    """--features, or VLP's lookup under --image_root (sharded h5 for COCO/CC, per-image
    .npy for Flickr30k, with the merged box file)."""
    if args.features:
        return open_store(args.features)
    if args.image_root is None:
        raise VLPError("give --features STORE, or --image_root with VLP's --region_* files")
    root = Path(args.image_root)
    bbox = root / args.region_bbox_file
    if args.dataset == "flickr30k":
        return open_store(root, "npy-dir", bbox_file=bbox)
    return open_store(root / args.region_det_file_prefix, "vlp-h5", bbox_file=bbox)


def keep_present(keys, store, skip: bool, log) -> set[str]:
    """The keys the store holds. Missing ones are listed (first 10 and a count): an error,
    or left out with a log line when `skip`."""
    keys = list(dict.fromkeys(keys))
    missing = [k for k in keys if k not in store]
    if missing:
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        listing = (f"{len(missing)} of {len(keys)} images have no features in {store.path}: "
                   f"{', '.join(missing[:10])}{more}")
        if not skip:
            raise VLPError(listing + " (--skip_missing_features leaves them out)")
        log(listing + "; left out")
    gone = set(missing)
    return {k for k in keys if k not in gone}
