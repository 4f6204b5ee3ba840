"""`vlp quickstart`: the main job on ToyWorld, CPU only, with a summary table."""

from __future__ import annotations

from vlp.cli.args import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "quickstart", run,
                    help="run the whole pipeline on ToyWorld and print a summary")
    p.add_argument("--out", default="runs/quickstart", help="where every stage writes")
    p.add_argument("--tiny", action="store_true",
                   help="a few dozen images: checks that every stage runs, in little time")


def run(args) -> int:
    from vlp import quickstart
    from vlp.cli.toyworld import describe

    ctx = quickstart.run(args.out, tiny=args.tiny)
    print()
    choice = ctx.results["precision"]
    print(f"training precision {choice['precision']} (a bfloat16 matrix product ran "
          f"{choice['bf16_speedup']:.2f}x as fast as float32 on this CPU)")
    print(describe(ctx.out / "toyworld", ctx.results["toyworld"]))
    print()
    print(quickstart.table(ctx.rows))
    return 0
