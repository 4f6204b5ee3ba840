"""`vlp train`: pretraining and finetuning with VLP's flags (see vlp.train.args)."""

from __future__ import annotations

from vlp.cli.args import add_command


def register(subparsers) -> None:
    from vlp.train.args import add_arguments

    p = add_command(subparsers, "train", run,
                    help="pretrain or finetune UnifiedVLP with VLP's flags "
                         "(explicit ranks or torchrun, torch.amp, exact resume)")
    add_arguments(p)


def run(args) -> int:
    from vlp.train.args import check
    from vlp.train.main import train

    train(check(args))
    return 0
