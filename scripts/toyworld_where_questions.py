"""Can finetuning read where one shape lies? Grid questions with and without box sines.

"Where is the red circle?" is answered by the cell of a 3x3 grid that holds the shape's
centre ("top left", "center", "bottom", ...). The question names one shape, so unlike
ToyWorld's left/right questions it needs no comparison: only the route from the naming
words to that shape's region slot and a reading of the slot's location. This writes
such questions for a main job's ToyWorld scenes, finetunes the main job's pretrained
checkpoint on the training ones with the main job's VQA settings once per
`--box_frequencies` value (0: VLP's box+class vector alone; N: sine/cosine features of
the box at N octaves, in a layer of their own that starts fresh), and prints the
official VQA accuracy on the test and the training grid questions side by side.
With `--with_vqa` it trains on the main job's own VQA training questions plus the grid
questions instead, and also scores the main job's VQA test questions, by question type.
The grid questions (`vlp.data.toyworld.where`) cover ToyWorld's VQA training split
(Karpathy train + restval) and its test split.

    python scripts/toyworld_where_questions.py runs/quickstart [--epochs 4] \\
        [--box_frequencies 0 8] [--region_location normed] [--with_vqa] \\
        [--out runs/quickstart/where]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlp.data.toyworld.where import write_grid_questions
from vlp.quickstart import TOY_REGIONS, speed_flags


def vqa_files(run: Path, split: str) -> tuple[Path, Path]:
    vqa = run / "toyworld" / "annotations" / "vqa"
    return (vqa / f"v2_OpenEnded_toy_{split}_questions.json",
            vqa / f"v2_toy_{split}_annotations.json")


def finetune(run: Path, out: Path, training: tuple[list[Path], list[Path]], frequencies: int,
             epochs: int, batch: int, location: str | None = None) -> Path:
    """The run's pretrained checkpoint finetuned on the question files `training`
    (questions, annotations) with the main job's VQA settings at `frequencies` octaves
    (and `--region_location location`, when given)."""
    from vlp.train.args import build_parser, check
    from vlp.train.main import train

    pretrained = max((run / "pretrain").glob("model.*[0-9]"), key=lambda p: int(p.name.split(".")[1]))
    precision = json.loads((run / "precision.json").read_text())
    argv = ["--output_dir", str(out), "--model_recover_path", str(pretrained),
            "--do_lower_case", "--do_train", "--tasks", "vqa2", "--head_learning_rate", "1e-3",
            "--src_file", *map(str, training[0]), "--vqa_annotations", *map(str, training[1]),
            "--image_map", str(run / "toyworld" / "annotations" / "dataset_toy.json"),
            "--features", str(run / "regions.lmdb"), "--new_segment_ids",
            "--s2s_prob", "0", "--bi_prob", "1", "--len_vis_input", str(TOY_REGIONS),
            "--max_len_b", "20", "--learning_rate", "1e-4", "--warmup_proportion", "0.1",
            "--drop_prob", "0", "--max_pred", "0", "--train_batch_size", str(batch),
            "--num_train_epochs", str(epochs),
            "--box_frequencies", str(frequencies), "--log_steps", "20", "--no_progress",
            *speed_flags(precision)]
    if location:
        argv += ["--region_location", location]
    train(check(build_parser().parse_args(argv)))
    return out / f"model.{epochs}"


def accuracy(run: Path, checkpoint: Path, questions: Path, annotations: Path, split: str) -> float:
    from vlp.cli.eval_vqa import main as eval_main

    argv = ["--model_recover_path", str(checkpoint), "--src_file", str(questions),
            "--vqa_annotations", str(annotations),
            "--image_map", str(run / "toyworld" / "annotations" / "dataset_toy.json"),
            "--features", str(run / "regions.lmdb"), "--split", split,
            "--len_vis_input", str(TOY_REGIONS), "--batch_size", "64", "--num_workers", "1",
            "--no_progress"]
    if eval_main(argv) != 0:
        raise SystemExit(f"scoring {checkpoint} on {questions} failed")
    metrics = checkpoint.parent / f"{checkpoint.name}.{split}.vqa_metrics.json"
    return json.loads(metrics.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a main-job output directory (vlp quickstart --out)")
    ap.add_argument("--box_frequencies", type=int, nargs="+", default=[0, 8])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--with_vqa", action="store_true",
                    help="train on the run's VQA training questions too; score its test questions")
    ap.add_argument("--region_location", choices=("vlp", "normed"),
                    help="the region input the finetuned model reads (default: the checkpoint's)")
    ap.add_argument("--out", type=Path, help="default: RUN/where")
    args = ap.parse_args()
    out = args.out or args.run / "where"
    out.mkdir(parents=True, exist_ok=True)
    files = {split: write_grid_questions(args.run / "toyworld", split, out, args.seed + i)
             for i, split in enumerate(("train", "test"))}
    counts = {s: len(json.loads(q.read_text())["questions"]) for s, (q, _) in files.items()}
    grid_q, grid_a = files["train"]
    own_q, own_a = vqa_files(args.run, "train") if args.with_vqa else (None, None)
    training = ([q for q in (own_q, grid_q) if q], [a for a in (own_a, grid_a) if a])
    rows = []
    for f in args.box_frequencies:
        checkpoint = finetune(args.run, out / f"box{f}", training, f, args.epochs, args.batch,
                              args.region_location)
        scores = [accuracy(args.run, checkpoint, *files["test"], "wtest")["overall"],
                  accuracy(args.run, checkpoint, *files["train"], "wtrain")["overall"]]
        if args.with_vqa:
            scores.append(accuracy(args.run, checkpoint, *vqa_files(args.run, "test"), "test"))
        rows.append((f, scores))
    mix = " with the run's VQA training questions" if args.with_vqa else ""
    print(f"grid questions: {counts['train']} train, {counts['test']} test; "
          f"{args.epochs} epochs{mix} from {args.run / 'pretrain'}")
    for f, (test, train, *vqa) in rows:
        label = "VLP's box+class vector" if f == 0 else f"+ box sines at {f} octaves"
        print(f"  box_frequencies {f:2d} ({label}): test {test:.2f}%, train {train:.2f}%")
        if vqa:
            types = ", ".join(f"{t} {a:.2f}" for t, a in sorted(vqa[0]["perQuestionType"].items()))
            print(f"    VQA test questions: {vqa[0]['overall']:.2f}% ({types})")


if __name__ == "__main__":
    main()
