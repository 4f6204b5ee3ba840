"""`vlp extract`: region features of your images, written to an LMDB or HDF5 store."""

from __future__ import annotations

import argparse

from vlp.cli.args import add_command, int_at_least, probability

EXAMPLES = """examples:
  vlp extract --images photos/ --detector runs/detector --out photos.lmdb
  vlp extract --image-list todo.txt --detector fasterrcnn_resnet50_fpn_coco.pth \\
      --out coco.h5 --min-boxes 10 --max-boxes 100 --device cuda --amp
  vlp extract --images val2014/ --boxes instances_val2014.json --detector runs/detector \\
      --out val_gt.lmdb                                  # features for given boxes
  vlp extract ... --shard 0/4 --out part0.lmdb   (then: vlp merge-stores all.lmdb part*.lmdb)
Rerunning the same command resumes; unusable images are listed in <out>.errors.jsonl."""


def register(subparsers) -> None:
    p = add_command(subparsers, "extract", run,
                    help="detect regions in images and store their features "
                         "(bottom-up-attention style)")
    p.epilog = EXAMPLES
    p.formatter_class = _Layout
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images; ids are the file stems")
    src.add_argument("--image-list", help="text file, one image path per line")
    p.add_argument("--detector", required=True,
                   help="detector directory (detector.json + model.safetensors) or a "
                        "torchvision Faster R-CNN state dict (.pth)")
    p.add_argument("--out", required=True, help="store to create or resume")
    p.add_argument("--format", choices=("lmdb", "h5"),
                   help="store format (default: h5 for .h5/.hdf5 paths, else lmdb)")
    p.add_argument("--min-boxes", type=int_at_least(1), default=10,
                   help="regions per image at least (the best ones fill up)")
    p.add_argument("--max-boxes", type=int_at_least(1), default=100,
                   help="regions per image at most")
    p.add_argument("--conf", type=probability, default=0.2,
                   help="keep regions whose best class scores at least this")
    p.add_argument("--nms", type=probability, default=0.3, help="per-class NMS IoU")
    p.add_argument("--agnostic-nms", type=probability, metavar="IOU",
                   help="then NMS across classes at this IoU, so an object detected as two "
                        "classes keeps one region (default: none, as bottom-up attention)")
    p.add_argument("--boxes", metavar="COCO_JSON",
                   help="features for the boxes of this COCO file instead of detecting; "
                        "the images are those it lists, under --images")
    p.add_argument("--key", choices=("stem", "id"), default="stem",
                   help="with --boxes: store ids from file stems or COCO image ids")
    p.add_argument("--shard", metavar="I/N", help="extract only shard I (0-based) of N")
    p.add_argument("--batch-size", type=int_at_least(1), default=4,
                   help="images per detector forward")
    p.add_argument("--workers", type=int_at_least(0),
                   help="DataLoader processes decoding images (default: 0 on the CPU, "
                        "where they would slow the detector, 4 with CUDA)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    p.add_argument("--num-classes", type=int_at_least(2),
                   help="for a .pth: its class count, background included (checked)")
    p.add_argument("--class-names", help="for a .pth: file of class names, one per line, "
                                         "background first")
    p.add_argument("--min-size", type=int_at_least(1), help="override the detector's "
                                                            "shorter input side")
    p.add_argument("--max-size", type=int_at_least(1), help="override its longer side cap")
    p.add_argument("--max-pixels", type=int_at_least(1), default=89_478_485,
                   help="skip larger images (decompression-bomb limit)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


class _Layout(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Flag defaults in the help, examples laid out as written."""


def run(args) -> int:
    from feature_extraction.commands import extract_images

    report = extract_images(
        detector=args.detector, out=args.out, images=args.images,
        image_list=args.image_list, boxes=args.boxes, key=args.key, format=args.format,
        min_boxes=args.min_boxes, max_boxes=args.max_boxes, conf=args.conf, nms=args.nms,
        agnostic_nms=args.agnostic_nms,
        shard_spec=args.shard, batch_size=args.batch_size, workers=args.workers,
        device=args.device, amp=args.amp, num_classes=args.num_classes,
        class_names_file=args.class_names, min_size=args.min_size, max_size=args.max_size,
        max_pixels=args.max_pixels, progress=not args.quiet)
    print(report.summary())
    return 0 if report.ok else 1
