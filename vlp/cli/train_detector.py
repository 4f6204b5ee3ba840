"""`vlp train-detector`: train the Faster R-CNN (ResNet-FPN) on a COCO-format set."""

from __future__ import annotations

from vlp.cli.args import add_command, int_at_least


def register(subparsers) -> None:
    p = add_command(
        subparsers, "train-detector", run,
        help="train a torchvision Faster R-CNN with FPN on COCO-format boxes; "
             "rerun to resume",
    )
    p.add_argument("--coco", required=True, help="COCO instances JSON of the training split")
    p.add_argument("--images", required=True, help="folder the file names are under")
    p.add_argument("--out", required=True,
                   help="detector directory to write (resumed if it holds a trainer state)")
    p.add_argument("--val-coco", help="COCO instances JSON to report mAP and recall@0.5 on")
    p.add_argument("--val-images", help="folder of the val images (default: --images)")
    p.add_argument("--backbone", choices=("resnet18", "resnet50"), default="resnet50")
    p.add_argument("--representation-size", type=int_at_least(1), default=1024,
                   help="box head width D = the region feature size")
    p.add_argument("--fpn-channels", type=int_at_least(1), default=256)
    p.add_argument("--min-size", type=int_at_least(1), default=800,
                   help="shorter image side fed to the detector")
    p.add_argument("--max-size", type=int_at_least(1), default=1333,
                   help="cap on the longer side")
    p.add_argument("--epochs", type=float, default=12.0)
    p.add_argument("--max-steps", type=int_at_least(1), help="overrides --epochs")
    p.add_argument("--batch-size", type=int_at_least(1), default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int_at_least(0), default=100)
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--workers", type=int_at_least(0),
                   help="DataLoader processes decoding images (default: 0 on the CPU, "
                        "4 with CUDA)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--amp", action="store_true", help="float16 mixed precision (CUDA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int_at_least(1), default=500,
                   help="steps between checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from feature_extraction.train import TrainOptions, train_detector

    opts = TrainOptions(
        coco=args.coco, images=args.images, out=args.out, val_coco=args.val_coco,
        val_images=args.val_images, backbone=args.backbone,
        representation_size=args.representation_size, fpn_channels=args.fpn_channels,
        min_size=args.min_size, max_size=args.max_size, epochs=args.epochs,
        max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        flip=not args.no_flip, workers=args.workers, device=args.device, amp=args.amp,
        seed=args.seed, save_every=args.save_every, progress=not args.quiet)
    metrics = train_detector(opts)
    print(describe(metrics))
    return 0


def describe(metrics: dict) -> str:
    how = "already trained, kept" if metrics.get("reused") else \
        f"{metrics['steps']} steps in {metrics['seconds']} s"
    line = f"detector at {metrics['checkpoint']} ({how})"
    if "map50" in metrics:
        line += (f"\n  val: mAP {metrics['map']:.3f}, mAP@0.5 {metrics['map50']:.3f}, "
                 f"recall@0.5 {metrics['recall50']:.3f} on {metrics['images']} images")
    return line
