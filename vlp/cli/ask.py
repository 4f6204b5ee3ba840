"""`vlp ask IMAGE "QUESTION" --bundle DIR`: detector + VQA model on any image file."""

from __future__ import annotations

from vlp.cli.args import add_command, int_at_least


def register(subparsers) -> None:
    p = add_command(subparsers, "ask", run,
                    help="answer a question about an image file with a bundle")
    p.add_argument("image", metavar="IMAGE", help="image file (JPEG, PNG, ...)")
    p.add_argument("question", metavar="QUESTION", help="the question, quoted")
    p.add_argument("--bundle", required=True,
                   help="directory with bundle.json (the output directory of vlp quickstart)")
    p.add_argument("--top", type=int_at_least(1), default=3, metavar="K",
                   help="the K most likely answers, with their probabilities")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", action="store_true",
                   help="print a JSON object with the top answers and the regions used")


def run(args) -> int:
    import json

    from vlp.bundle import ImageAnswerer, load_bundle

    answerer = ImageAnswerer(load_bundle(args.bundle), args.device)
    result = answerer.ask(args.image, args.question, args.top)
    if args.json:
        print(json.dumps(result))
    else:
        others = ", ".join(f"{c['answer']} {c['score']:.2f}" for c in result["candidates"][1:])
        print(f"{result['answer']}  ({others})" if others else result["answer"])
    return 0
