"""`vlp convert-features`: copy VLP / BUTD / .npy region features into an LMDB or HDF5 store."""

from __future__ import annotations

import argparse

from vlp.cli.args import add_command, int_at_least

EXAMPLES = """examples:
  vlp convert-features --from vlp-h5 --to lmdb --out coco_regions.lmdb \\
      --bbox-file coco_detection_vg_thresh0.2_feat_gvd_checkpoint_trainvaltest.h5 \\
      feat_cls_1000/coco_detection_vg_100dets_gvd_checkpoint_trainval
  vlp convert-features --from butd-tsv --to h5 --out coco_butd.h5 trainval/*.tsv
  vlp convert-features --from npy-dir --bbox-file flickr30k_..._trainvaltest.h5 --to lmdb \\
      --out flickr30k_regions.lmdb region_feat_gvd_wo_bgd/trainval
Rerunning the same command resumes: ids already in the output are skipped."""


def register(subparsers) -> None:
    p = add_command(
        subparsers, "convert-features", run,
        help="convert VLP h5 shards, BUTD TSV or .npy features into an LMDB or HDF5 store",
    )
    p.epilog = EXAMPLES
    p.formatter_class = _KeepEpilogLayout
    p.add_argument("src", nargs="+", help="vlp-h5: the shard prefix (…/<prefix> of "
                   "<prefix>_feat<XYZ>.h5); butd-tsv: one or more .tsv files; npy-dir: the folder")
    p.add_argument("--from", dest="source", required=True,
                   choices=("vlp-h5", "butd-tsv", "npy-dir"),
                   help="format of the features you have")
    p.add_argument("--to", dest="format", choices=("lmdb", "h5"), default="lmdb",
                   help="store to write: an LMDB directory or one HDF5 file")
    p.add_argument("--out", required=True, help="store to create or resume")
    p.add_argument("--bbox-file", help="VLP's merged [N, 6] box file (vlp-h5, npy-dir)")
    p.add_argument("--tsv-fields", default="butd",
                   help="TSV column names: 'butd', 'lxmert' or a comma-separated list")
    p.add_argument("--batch-size", type=int_at_least(1), default=256,
                   help="records per committed transaction")
    p.add_argument("--limit", type=int_at_least(1), help="stop after this many source records")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


class _KeepEpilogLayout(argparse.ArgumentDefaultsHelpFormatter,
                        argparse.RawDescriptionHelpFormatter):
    """Flag defaults in the help, examples laid out as written."""


def run(args) -> int:
    from vlp.data.features.convert import convert_features, open_source
    from vlp.data.features.stores import create_store
    from vlp.errors import VLPError

    if args.source in ("vlp-h5", "npy-dir") and not args.bbox_file:
        raise VLPError(f"--from {args.source} needs --bbox-file (VLP's merged box file, "
                       "e.g. coco_detection_vg_thresh0.2_feat_gvd_checkpoint_trainvaltest.h5)")
    source = open_source(args.source, args.src, bbox_file=args.bbox_file,
                         tsv_fields=args.tsv_fields)
    with create_store(args.out, args.format, batch_size=args.batch_size) as writer:
        report = convert_features(source, writer, progress=not args.quiet, limit=args.limit)
    print(report.summary(args.out))
    return 0
