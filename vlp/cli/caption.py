"""`vlp caption IMAGE... --bundle DIR`: detector + caption model on any image file."""

from __future__ import annotations

from vlp.cli.args import add_command, int_at_least


def register(subparsers) -> None:
    p = add_command(subparsers, "caption", run,
                    help="caption image files with a bundle (detector + caption model)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument("--bundle", required=True,
                   help="directory with bundle.json (the output directory of vlp quickstart)")
    p.add_argument("--beam_size", type=int_at_least(1), default=None,
                   help="beam size (default: the bundle's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per image, with the regions used")


def run(args) -> int:
    import json
    import sys

    from vlp.bundle import ImageCaptioner, load_bundle
    from vlp.errors import VLPError

    captioner = ImageCaptioner(load_bundle(args.bundle), args.device, args.beam_size)
    failed = 0
    for image in args.images:
        try:
            result = captioner.caption(image)
        except VLPError as err:
            print(f"vlp caption: error: {err}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps(result))
        else:
            labels = ", ".join(r["label"] for r in result["regions"][:6])
            print(f"{image}: {result['caption']}  [{len(result['regions'])} regions: {labels}]")
    return 2 if failed == len(args.images) else (1 if failed else 0)
