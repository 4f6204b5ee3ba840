"""`vlp quickstart`: the main job on ToyWorld, CPU only, with a summary table."""

from __future__ import annotations

from vlp.cli.args import add_command


def register(subparsers) -> None:
    from vlp.quickstart import DEFAULT_SEED, PRECISIONS

    p = add_command(subparsers, "quickstart", run,
                    help="run the whole pipeline on ToyWorld and print a summary")
    p.add_argument("--out", default="runs/quickstart", help="where every stage writes")
    p.add_argument("--tiny", action="store_true",
                   help="a few dozen images: checks that every stage runs, in little time")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="the training stages' precision: auto (bfloat16 autocast where this "
                        "CPU multiplies it at least 1.5x as fast as float32), bf16 or fp32")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="every training stage's seed, pretraining to grounding (VLP's "
                        "default); ToyWorld and the detector keep theirs, so seeds compare "
                        "models on the same images and regions")
    p.add_argument("--ablation", action="store_true",
                   help="also finetune the caption and VQA models from BERT alone (no "
                        "pretraining, same steps) and compare them with the pretrained ones")


def run(args) -> int:
    from vlp import quickstart
    from vlp.cli.toyworld import describe

    ctx = quickstart.run(args.out, tiny=args.tiny, precision=args.precision,
                           ablation=args.ablation, seed=args.seed)
    print()
    choice = ctx.results["precision"]
    how = "as asked" if choice.get("forced") else "chosen"
    print(f"training precision {choice['precision']}, {how} (a bfloat16 matrix product ran "
          f"{choice['bf16_speedup']:.2f}x as fast as float32 on this CPU); seed "
          f"{ctx.results['seed']}")
    print(describe(ctx.out / "toyworld", ctx.results["toyworld"]))
    print()
    print(quickstart.table(ctx.rows))
    if "ablation" in ctx.results:
        print()
        print(quickstart.ablation_table(ctx.results))
    return 0
