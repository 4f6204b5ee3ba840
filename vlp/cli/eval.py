"""`vlp eval`: every task of one checkpoint on its own data, as a multi-task run trains
them (`vlp train --tasks img2txt,vqa2,refcoco`): captions by `vlp decode` and coco-caption,
questions by `vlp eval-vqa`, expressions by `vlp eval-grounding`, each the task object's
own evaluation (vlp.train.task_data). One JSON of every task's metrics beside the
checkpoint."""

from __future__ import annotations

import argparse

from vlp.cli.args import add_command, int_at_least
from vlp.data.sources import add_feature_flags
from vlp.flags import add_run_flags


def register(subparsers) -> None:
    p = add_command(subparsers, "eval", run,
                    help="evaluate every task of one checkpoint (captions, VQA, localization) "
                         "on the files given as TASK:FILE")
    add_arguments(p)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--model_recover_path", required=True, help="checkpoint directory")
    p.add_argument("--src_file", nargs="+", required=True, metavar="TASK:FILE",
                   help="img2txt:Karpathy-style caption JSON, vqa2:questions JSON (one or "
                   "more), refcoco:refs(<split_by>).p; the tasks named are the ones evaluated")
    p.add_argument("--split", nargs="+", default=["test"], metavar="[TASK:]SPLIT",
                   help="a bare SPLIT applies to every task with no TASK:SPLIT entry; vqa2 "
                   "names one split per questions file, in order")
    p.add_argument("--vqa_annotations", nargs="+", default=None,
                   help="annotations JSON of each vqa2 questions file, in order")
    p.add_argument("--image_map", nargs="+", default=None,
                   help="Karpathy-style JSON mapping VQA image ids to store keys")
    p.add_argument("--len_vis_input", type=int_at_least(1), default=100)
    p.add_argument("--max_tgt_length", type=int_at_least(1), default=20,
                   help="caption tokens decoded")
    p.add_argument("--max_len_b", type=int_at_least(1), default=20,
                   help="question and expression tokens kept")
    p.add_argument("--beam_size", type=int_at_least(1), default=1)
    p.add_argument("--batch_size", type=int_at_least(1), default=32)
    p.add_argument("--bert_model", default=None,
                   help="BERT directory with the vocabulary (default: the checkpoint's)")
    p.add_argument("--do_lower_case", action="store_true")
    add_feature_flags(p)
    p.add_argument("--no_java", action="store_true",
                   help="score captions with the pure-Python tokenizer and metrics")
    add_run_flags(p)
    return p


def run(args) -> int:
    evaluate(args)
    return 0


def task_flags(args) -> list[argparse.Namespace]:
    """One namespace per task named in --src_file (TASK:FILE), with its files and splits."""
    from vlp.errors import VLPError
    from vlp.train.task_data import KINDS

    files: dict[str, list[str]] = {}
    for entry in args.src_file:
        name, sep, path = entry.partition(":")
        if not sep or name not in KINDS:
            raise VLPError(f"--src_file {entry}: give TASK:FILE, TASK one of "
                           f"{', '.join(KINDS)}")
        files.setdefault(name, []).append(path)
    bare = [s for s in args.split if ":" not in s]
    named: dict[str, list[str]] = {}
    for entry in args.split:
        name, sep, split = entry.partition(":")
        if sep:
            if name not in files:
                raise VLPError(f"--split {entry}: no --src_file {name}:FILE to evaluate")
            named.setdefault(name, []).append(split)
    out = []
    for name, paths in files.items():
        splits = named.get(name, bare)
        if not splits:
            raise VLPError(f"--split: no split for {name} (give SPLIT or {name}:SPLIT)")
        out.append(argparse.Namespace(tasks=name, src_file=paths, split=splits))
    return out


def evaluate(args) -> dict:
    """{task: {split: metrics}} of the checkpoint, also written to
    OUT/CHECKPOINT.eval.json."""
    import json
    from pathlib import Path

    from vlp.model.load import expand
    from vlp.train.task_data import make

    checkpoint = expand(args.model_recover_path)
    if len(checkpoint) != 1:
        from vlp.errors import VLPError

        raise VLPError(f"--model_recover_path {args.model_recover_path}: names "
                       f"{len(checkpoint)} checkpoints; vlp eval takes one")
    checkpoint = checkpoint[0]
    tasks = [make(one) for one in task_flags(args)]
    for task in tasks:
        task.check_evaluation(args)
    metrics = {task.name: task.evaluate(checkpoint, args) for task in tasks}
    out_dir = Path(args.output_dir) if args.output_dir else checkpoint.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{checkpoint.name}.eval.json"
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"{checkpoint}: {', '.join(metrics)} -> {path}")
    return metrics


def main(argv: list[str] | None = None, prog: str = "vlp eval") -> int:
    """The command with these flags, callable from Python."""
    from vlp.cli.args import ArgumentParser, run_script

    parser = ArgumentParser(prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            description="Evaluate every task of one checkpoint.")
    return run_script(add_arguments(parser), evaluate, argv)
