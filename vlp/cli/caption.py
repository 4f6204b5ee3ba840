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
    p.add_argument("--n_best", type=int_at_least(1), default=1, metavar="K",
                   help="print the K best captions of the beam with their scores (K <= beam size)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per image, with the regions used "
                   "(and with --n_best, the list of the K best)")


def run(args) -> int:
    import json
    import sys

    from vlp.bundle import ImageCaptioner, load_bundle
    from vlp.errors import VLPError

    bundle = load_bundle(args.bundle)
    beam = args.beam_size or bundle.beam_size
    if args.n_best > beam:
        raise VLPError(f"--n_best {args.n_best} exceeds the beam size {beam} (raise --beam_size)")
    captioner = ImageCaptioner(bundle, args.device, args.beam_size)
    failed = 0
    for image in args.images:
        try:
            result = captioner.caption(image, args.n_best)
        except VLPError as err:
            print(f"vlp caption: error: {err}", file=sys.stderr)
            failed += 1
            continue
        if args.n_best == 1:
            del result["n_best"]  # the output of a plain `vlp caption` stays as it was
        print(json.dumps(result) if args.json else _text(image, result))
    return 2 if failed == len(args.images) else (1 if failed else 0)


def _text(image: str, result: dict) -> str:
    if "n_best" in result:
        return "\n".join(f"{image}: {c['caption']}  ({c['score']:.3f})" for c in result["n_best"])
    labels = ", ".join(r["label"] for r in result["regions"][:6])
    return f"{image}: {result['caption']}  [{len(result['regions'])} regions: {labels}]"
