"""`vlp toyworld`: write the synthetic dataset in the real COCO/CC/VQA formats."""

from __future__ import annotations

from vlp.cli.args import add_command, int_at_least, probability


def register(subparsers) -> None:
    p = add_command(
        subparsers, "toyworld", run,
        help="generate ToyWorld, a synthetic dataset in the COCO, CC and VQA v2 formats",
    )
    p.add_argument("--out", required=True, help="directory to create")
    p.add_argument("--images", type=int_at_least(4), default=1000,
                   help="captioned + VQA images (COCO role), split train/restval/val/test")
    p.add_argument("--pretrain-images", type=int_at_least(0), default=1000,
                   help="alt-text images for pretraining (Conceptual Captions role)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="same seed, byte-identical files")
    p.add_argument("--answer-noise", type=probability, default=0.1,
                   help="chance that each of the ten human answers is a plausible wrong one")
    p.add_argument("--image-format", choices=("jpg", "png"), default="jpg")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing directory made with other settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from vlp.data.toyworld import ToyWorldConfig, generate

    cfg = ToyWorldConfig(images=args.images, pretrain_images=args.pretrain_images,
                         size=args.size, seed=args.seed, answer_noise=args.answer_noise,
                         image_format=args.image_format)
    manifest = generate(args.out, cfg, overwrite=args.overwrite, progress=not args.quiet)
    print(describe(args.out, manifest))
    return 0


def describe(out, manifest: dict) -> str:
    """A few lines saying what is in a ToyWorld directory."""
    from vlp.data.toyworld.formats import CATEGORIES

    splits = ", ".join(f"{n} {s}" for s, n in manifest["images"].items())
    kinds = ", ".join(f"{n} {k}" for k, n in manifest["questions"].items())
    how = "already there, kept" if manifest.get("reused") else f"made in {manifest['seconds']} s"
    return "\n".join([
        f"ToyWorld at {out} ({how})",
        f"  images      {sum(manifest['images'].values())} ({splits}), "
        f"{manifest['captions']} captions -> annotations/dataset_toy.json",
        f"  detection   {manifest['objects']} objects in {len(CATEGORIES)} categories "
        f"-> annotations/instances_{{train,val}}.json",
        f"  pretraining {manifest['pretrain_images']} alt-text images "
        f"-> annotations/dataset_cc_toy.json",
        f"  VQA         {sum(manifest['questions'].values())} questions ({kinds}; "
        f"{manifest['yes_fraction']:.0%} of yes/no are yes) -> annotations/vqa/",
        f"  preview     {out}/preview.png",
    ])
