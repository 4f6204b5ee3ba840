"""`vlp locate IMAGE "EXPRESSION" --bundle DIR`: detector + localization model on any image
file: the box of the region the expression names."""

from __future__ import annotations

from vlp.cli.args import add_command, int_at_least


def register(subparsers) -> None:
    p = add_command(subparsers, "locate", run,
                    help="find the region a referring expression names in an image file "
                         "with a bundle")
    p.add_argument("image", metavar="IMAGE", help="image file (JPEG, PNG, ...)")
    p.add_argument("expression", metavar="EXPRESSION", help="the expression, quoted")
    p.add_argument("--bundle", required=True,
                   help="directory with bundle.json (the output directory of vlp quickstart)")
    p.add_argument("--top", type=int_at_least(1), default=3, metavar="K",
                   help="the K most likely regions, with their probabilities")
    p.add_argument("--draw", metavar="OUT.png", default=None,
                   help="write the image with the box found drawn on it")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", action="store_true",
                   help="print a JSON object with the box, the top regions and all regions used")


def run(args) -> int:
    import json

    from vlp.bundle import ImageLocator, load_bundle

    locator = ImageLocator(load_bundle(args.bundle), args.device)
    pixels = locator.read(args.image)
    result = {"image": args.image, **locator.locate_pixels(pixels, args.expression, args.top)}
    if args.draw:
        from vlp.report import draw_located

        draw_located(pixels, result["box"], f"{args.expression} {result['probability']:.2f}",
                     args.draw)
        result["drawn"] = args.draw
    if args.json:
        print(json.dumps(result))
    else:
        x1, y1, x2, y2 = result["box"]
        best = result["candidates"][0]
        print(f"{args.image}: [{x1}, {y1}, {x2}, {y2}] {best['label']} "
              f"{result['probability']:.2f}" + (f" -> {args.draw}" if args.draw else ""))
    return 0
