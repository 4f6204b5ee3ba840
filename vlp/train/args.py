"""`vlp train` flags: VLP's run_img2txt_dist.py flags with their meanings, plus modern ones."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlp.data.captions import TRAIN_SPLITS
from vlp.data.sources import add_feature_flags
from vlp.errors import VLPError
from vlp.flags import ArgumentParser, add_accepted_flags, int_at_least, probability
from vlp.model.config import NEW_LAYER_INITS, REGION_LOCATIONS
from vlp.model.load import resolve
from vlp.train.multitask import task_args, task_names
from vlp.train.optim import OPTIMIZERS

TASKS = ("img2txt", "vqa2", "refcoco")
SCHEDULES = ("warmup_linear", "warmup_constant", "warmup_cosine")
DATASETS = ("coco", "flickr30k", "cc")


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = p.add_argument_group("VLP's flags (same meanings)")
    g.add_argument("--output_dir", required=True,
                   help="checkpoints, logs and the token cache; rerunning resumes from here")
    g.add_argument("--bert_model",
                   help="a Hugging Face BERT directory (config.json, weights, vocab.txt); "
                   "its weights start the text side unless --model_recover_path is given")
    g.add_argument("--model_recover_path",
                   help="weights to start from (not a resume): a vlp checkpoint directory, a "
                   "VLP model.N.bin, or a Hugging Face BERT directory")
    g.add_argument("--from_scratch", action="store_true",
                   help="random initial weights (sizes from --bert_model's config.json)")
    g.add_argument("--do_train", action="store_true", help="train (required, as in VLP)")
    g.add_argument("--do_lower_case", action="store_true", help="lower-case text (uncased BERT)")
    g.add_argument("--log_file", default="training.log",
                   help="text log in --output_dir; rank k>0 writes <name>.rank<k>.log")
    g.add_argument("--learning_rate", type=float, default=3e-5)
    g.add_argument("--weight_decay", type=float, default=0.01,
                   help="decoupled weight decay, not on biases and LayerNorm (VLP always "
                   "used 0.01, whatever the flag said)")
    g.add_argument("--label_smoothing", type=probability, default=0.0,
                   help="masked LM: VLP's label smoothing; the loss is the KL divergence to a "
                   "target with this share spread over every token but padding")
    g.add_argument("--drop_prob", type=probability, default=0.1,
                   help="hidden, attention and region dropout of the model being trained "
                   "(VLP set it on every run)")
    g.add_argument("--num_train_epochs", type=int_at_least(1), default=30)
    g.add_argument("--train_batch_size", type=int_at_least(1), default=64,
                   help="examples per optimizer step per process (the global batch is "
                   "world_size times this, as in VLP)")
    g.add_argument("--gradient_accumulation_steps", type=int_at_least(1), default=1,
                   help="split each step's batch into this many micro-batches")
    g.add_argument("--warmup_proportion", type=float, default=0.1)
    g.add_argument("--sche_mode", choices=SCHEDULES, default="warmup_linear")
    g.add_argument("--new_segment_ids", action="store_true",
                   help="VLP's 6 segment types (otherwise BERT's 2)")
    g.add_argument("--always_truncate_tail", action="store_true",
                   help="cut long captions at the tail (otherwise head or tail at random)")
    g.add_argument("--max_len_a", type=int, default=0, help="must be 0 (no text segment A)")
    g.add_argument("--max_len_b", type=int_at_least(1), default=20, help="caption tokens kept")
    g.add_argument("--trunc_seg", default="b", choices=("a", "b"),
                   help="VLP's segment to cut first once no length limit applies; the image "
                   "is a fixed segment A, so either way a caption is cut to --max_len_b")
    g.add_argument("--tokenized_input", action="store_true",
                   help="captions are already the vocabulary's tokens, separated by spaces "
                   "(VLP's WhitespaceTokenizer: no word pieces, no lower-casing)")
    g.add_argument("--config_path", default=None,
                   help="a BERT config JSON (bert_config.json or config.json) that gives the "
                   "model's sizes instead of --bert_model's")
    g.add_argument("--max_position_embeddings", type=int_at_least(1), default=None,
                   help="position table of the model being trained; a starting table is cut "
                   "to it or grown by repeating its rows, as VLP did (none: the starting "
                   "model's)")
    g.add_argument("--relax_projection", action="store_true",
                   help="4 projections in the masked-LM head, one per VLP task index "
                   "(seq2seq 3, bidirectional 0); a one-projection start is copied into each. "
                   "Without it a 4-projection start keeps the run's (captioning 3, VQA 0)")
    g.add_argument("--vis_mask_prob", type=probability, default=0.0,
                   help="share of each image's regions masked (their slots zero), with "
                   "VLP's loss matching their feature and location embeddings")
    g.add_argument("--len_vis_input", type=int_at_least(1), default=100,
                   help="regions per image (the first N of each record)")
    g.add_argument("--box_frequencies", type=int_at_least(0), default=None,
                   help="give region slots sine/cosine features of the box at this many "
                        "octaves (0: VLP's box+class vector only; default: the checkpoint's, "
                        "0 for a new model); a checkpoint without them gets a fresh layer")
    g.add_argument("--region_location", choices=REGION_LOCATIONS, default=None,
                   help="how region slots take in their box: vlp (VLP's box+class vector in "
                        "the slot's sum), normed (the box's centre and size through a layer "
                        "and LayerNorm of its own, added to the normalised feature and "
                        "box+class sum); default: the checkpoint's, vlp for a new model")
    g.add_argument("--region_fc7", default=None, metavar="DIR",
                   help="start the first region layer from the BUTD detector's fc7 "
                   "(VLP's detectron_weights/ with fc7_w.pkl and fc7_b.pkl), as VLP did for "
                   "its fc6 region features; only a model whose region layers are new")
    g.add_argument("--mask_prob", type=probability, default=None,
                   help="share of text tokens masked (default 0.15, VLP's, for vqa2 too)")
    g.add_argument("--max_pred", type=int_at_least(0), default=None,
                   help="most masked tokens per example (default 3, VLP's, for vqa2 too; "
                   "VLP's --mask_prob 0 --max_pred 1 replaces one question token, "
                   "--max_pred 0 none)")
    g.add_argument("--output_vocab", choices=("all", "train"), default=None,
                   help="tokens the masked-LM head scores: all (VLP's), or train, the tokens of "
                   "this run's training captions (softmax over them alone, and decoding never "
                   "emits another: faster on a small caption vocabulary); default: the "
                   "checkpoint's, all for a new model")
    g.add_argument("--max_drop_worst_ratio", type=probability, default=0.0,
                   help="masked LM: leave out this share of each batch's examples, those with "
                   "the largest loss, in the epochs after --drop_after")
    g.add_argument("--drop_after", type=int_at_least(0), default=6,
                   help="the last epoch that keeps every example (VLP's default 6)")
    g.add_argument("--s2s_prob", type=probability, default=1.0)
    g.add_argument("--bi_prob", type=probability, default=0.0)
    g.add_argument("--tasks", default="img2txt",
                   help="img2txt: captions; vqa2: VQA 2.0; refcoco: localization from "
                   "referring expressions (RefCOCO, RefCOCO+, RefCOCOg); several joined by "
                   "commas train one model on all of them, each --src_file given as "
                   "TASK:FILE (vlp.train.multitask)")
    g.add_argument("--grounding_objective", choices=("regions", "centre"), default="regions",
                   help="--tasks refcoco: regions, each region scored against the expression "
                   "(read both ways), the softmax over them trained on the regions at IoU >= "
                   "0.5; centre, the expression read left to right and the referent's box "
                   "centre regressed from its final [SEP] (vlp.train.grounding)")
    g.add_argument("--task_weights", type=float, nargs="+", default=None,
                   help="with several --tasks: the chance of each (in --tasks order) that a "
                   "step's batch is its; default: by dataset size, every example once an epoch")
    g.add_argument("--task_learning_rates", nargs="+", default=None, metavar="TASK:LR",
                   help="with several --tasks: a task's own peak rate, in place of "
                   "--learning_rate on its batches (the schedule's shape is shared; heads "
                   "keep --head_learning_rate scaled alike)")
    g.add_argument("--task_batch_sizes", nargs="+", default=None, metavar="TASK:N",
                   help="with several --tasks: a task's own batch size per process, in place "
                   "of --train_batch_size on its batches")
    g.add_argument("--task_drop_probs", nargs="+", default=None, metavar="TASK:P",
                   help="with several --tasks: a task's own dropout rate, in place of "
                   "--drop_prob on its batches")
    g.add_argument("--src_file", nargs="+", default=None,
                   help="Karpathy-style caption JSON(s) (dataset_coco.json, dataset_cc.json); "
                   "--tasks refcoco: refs(<split_by>).p with instances.json beside it")
    g.add_argument("--dataset", choices=DATASETS, default="coco")
    g.add_argument("--split", nargs="+", default=["train", "restval"])
    g.add_argument("--use_num_imgs", type=int, default=-1,
                   help="train on the first N images only (vqa2: the first N questions, "
                   "as VLP counted them; -1: all)")
    g.add_argument("--file_valid_jpgs", default=None,
                   help="JSON list of image file names to keep; must exist when given")
    g.add_argument("--fp16", action="store_true", help="float16 autocast + GradScaler (CUDA)")
    g.add_argument("--amp", action="store_true",
                   help="with --fp16, as --fp16; alone, float32 (as in VLP, where it chose "
                   "apex's amp for --fp16)")
    g.add_argument("--fp32_embedding", action="store_true",
                   help="accepted; with autocast every weight, embeddings included, stays fp32")
    g.add_argument("--loss_scale", type=float, default=0.0,
                   help="fp16 starting loss scale (0: the GradScaler default)")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--num_workers", type=int_at_least(0), default=4)
    g.add_argument("--no_cuda", action="store_true")
    g.add_argument("--local_rank", type=int, default=-1)
    g.add_argument("--global_rank", type=int, default=-1)
    g.add_argument("--world_size", type=int_at_least(1), default=1)
    g.add_argument("--dist_url", default="file://[PT_OUTPUT_DIR]/nonexistent_file",
                   help="rendezvous for explicit ranks, e.g. tcp://HOST:PORT "
                   "([PT_OUTPUT_DIR] is replaced by --output_dir)")

    add_feature_flags(g)

    v = p.add_argument_group("VQA 2.0 (--tasks vqa2)")
    v.add_argument("--vqa_annotations", nargs="+", default=None,
                   help="annotation JSON for each questions JSON in --src_file (imdb .npy "
                   "files carry their answers)")
    v.add_argument("--image_map", nargs="+", default=None,
                   help="Karpathy-style JSON mapping image ids to file names (store keys); "
                   "imdb entries name their image themselves")
    v.add_argument("--answer_vocab", default=None,
                   help="answer vocabulary (JSON, or one answer a line, as Pythia's "
                   "answers_vqa.txt that VLP used); default: built from the training "
                   "questions by --answer_vocab_from")
    v.add_argument("--answer_vocab_from", choices=("multiple_choice_answer", "all_answers"),
                   default="multiple_choice_answer",
                   help="multiple_choice_answer: Pythia's answers_vqa.txt rule, which VLP "
                   "trained with (each question's multiple_choice_answer, or for an imdb the "
                   "most frequent of its answers; those of --answer_min_count questions or "
                   "more, sorted, <unk> first and never predicted); all_answers: the "
                   "--num_answers most frequent of all annotators' answers")
    v.add_argument("--answer_min_count", type=int_at_least(1), default=None,
                   help="questions an answer needs to enter the vocabulary (default 9, "
                   "Pythia's; --answer_vocab_from multiple_choice_answer)")
    v.add_argument("--num_answers", type=int_at_least(1), default=None,
                   help="vocabulary size (default 3129; --answer_vocab_from all_answers)")
    v.add_argument("--head_learning_rate", type=float, default=None,
                   help="peak learning rate of the (new, random) answer classifier, or with "
                   "--tasks refcoco the localization head; default "
                   "--learning_rate as VLP. A larger one fits the head before its random "
                   "gradients wear away what the pretrained encoder knows")

    s = p.add_argument_group("self-critical sequence training")
    s.add_argument("--scst", action="store_true",
                   help="SCST from a cross-entropy checkpoint (--model_recover_path)")
    s.add_argument("--scst_reward", choices=("vlp", "standard"), default="vlp",
                   help="vlp: VLP's SCST (one example per caption, that caption the only "
                   "reference, CIDEr-D on word-piece ids with document frequencies from each "
                   "scoring call, VLP's decoding mask and loss mask); standard: one example "
                   "per image, all its references, PTB-tokenised words, document frequencies "
                   "from the training references")
    s.add_argument("--scst_baseline", choices=("greedy", "mean"), default="greedy",
                   help="greedy decoding's reward (VLP) or the mean of the example's other "
                   "samples")
    s.add_argument("--scst_samples", type=int_at_least(1), default=1,
                   help="captions sampled per example (at least 2 with --scst_baseline mean)")

    m = p.add_argument_group("further flags")
    m.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU or CUDA)")
    m.add_argument("--block_masked_regions", action="store_true",
                   help="--vis_mask_prob: also keep every position from attending to the "
                   "masked regions, as VLP's loader meant to (its line changed a copy of the "
                   "mask, so VLP's masked regions stayed visible as zero slots)")
    m.add_argument("--layer_norm_eps", type=float, default=1e-5,
                   help="LayerNorm eps of a model built from a BERT (VLP hard-coded 1e-5; "
                   "BERT checkpoints were trained with 1e-12); checkpoints keep their own")
    m.add_argument("--new_layer_init", choices=NEW_LAYER_INITS, default="torch",
                   help="how the layers BERT lacks (regions, VQA head) start: PyTorch's "
                   "default (VLP) or BERT's normal(0, 0.02)")
    m.add_argument("--optimizer", choices=OPTIMIZERS, default="bertadam",
                   help="bertadam: VLP's BertAdam (no bias correction, eps 1e-6 outside the "
                   "square root; with --fp16 apex's FusedAdam as VLP: eps 1e-8); adamw: "
                   "torch's fused AdamW with bias correction, eps 1e-6")
    m.add_argument("--max_grad_norm", type=float, default=1.0,
                   help="gradient clipping; bertadam: each gradient tensor to this norm, as "
                   "VLP's 1.0 (with --fp16 each parameter group's gradients together); "
                   "adamw: the global norm. 0 turns clipping off")
    m.add_argument("--save_steps", type=int_at_least(0), default=0,
                   help="also checkpoint every N optimizer steps (0: epochs only)")
    m.add_argument("--keep_step_checkpoints", type=int_at_least(1), default=2)
    m.add_argument("--keep_checkpoints", type=int_at_least(1), default=None,
                   help="keep only the newest N epoch checkpoints (default: every one, as "
                   "VLP); older ones are removed once the new one is complete")
    m.add_argument("--max_steps", type=int_at_least(0), default=0,
                   help="stop after N optimizer steps (0: run all epochs); also sets the "
                   "schedule's length")
    m.add_argument("--log_dir", default=None, help="TensorBoard folder (default output_dir/tb)")
    m.add_argument("--log_steps", type=int_at_least(1), default=10)
    m.add_argument("--skip_nonfinite", action="store_true",
                   help="skip and count batches with NaN/inf loss instead of stopping")
    m.add_argument("--fsdp", action="store_true",
                   help="shard parameters, gradients and optimizer state across the ranks "
                   "(FSDP2, each encoder layer a unit; float32 shards, --bf16/--fp16 for "
                   "the gathered weights); checkpoints as torch.distributed.checkpoint "
                   "shards in <checkpoint>/dcp, resumed on the same number of ranks")
    m.add_argument("--dist_timeout", type=float, default=600.0,
                   help="seconds a rank waits for the others before failing")
    m.add_argument("--deterministic", action="store_true",
                   help="torch deterministic algorithms (bitwise repeatable on CPU)")
    m.add_argument("--no_progress", action="store_true", help="no progress bar")
    # Losses go to TensorBoard and log.jsonl; VLP never read --finetune_decay.
    add_accepted_flags(p, "run_img2txt_dist.py", ("--enable_visdom", "--finetune_decay"),
                       (("--visdom_port", int),))
    return p


def check_answer_vocab_flags(args: argparse.Namespace) -> None:
    """Each vocabulary rule has its own size flag; the other one is refused, not ignored."""
    from vlp.eval.vqa_answers import DEFAULT_VOCAB_SIZE, PYTHIA_MIN_COUNT

    if args.answer_vocab_from == "multiple_choice_answer":
        active, other, default = "answer_min_count", "num_answers", PYTHIA_MIN_COUNT
    else:
        active, other, default = "num_answers", "answer_min_count", DEFAULT_VOCAB_SIZE
    if getattr(args, other) is not None:
        raise VLPError(f"--{other} does not apply to --answer_vocab_from "
                       f"{args.answer_vocab_from}")
    if getattr(args, active) is None:
        setattr(args, active, default)


def check(args: argparse.Namespace) -> argparse.Namespace:
    """Conflicting or incomplete flags -> VLPError naming them; fills derived values."""
    if not args.do_train:
        raise VLPError("--do_train is required (training is what this command does)")
    if args.bf16 and args.fp16:
        raise VLPError("--bf16 conflicts with --fp16: choose one precision")
    if args.head_learning_rate is not None and args.tasks == "img2txt":
        raise VLPError("--head_learning_rate sets the rate of the VQA answer classifier or the "
                       "localization head; it needs --tasks vqa2 or refcoco")
    if abs(args.s2s_prob + args.bi_prob - 1.0) > 1e-6:
        raise VLPError(f"--s2s_prob {args.s2s_prob} + --bi_prob {args.bi_prob} must be 1")
    if args.max_len_a:
        raise VLPError("--max_len_a must be 0: captions are segment B, images segment A")
    if args.scst and args.fsdp:
        # Each rank samples until its own captions end, so ranks would gather each
        # layer's weights a different number of times and wait for one another forever.
        raise VLPError("--scst does not run with --fsdp (sampled captions end at a different "
                       "step on each rank); use DDP, which SCST's model size allows")
    if args.train_batch_size % args.gradient_accumulation_steps:
        raise VLPError(f"--train_batch_size {args.train_batch_size} is not a multiple of "
                       f"--gradient_accumulation_steps {args.gradient_accumulation_steps}")
    if not args.src_file:
        raise VLPError("--src_file is required (Karpathy-style caption JSON)")
    names = task_names(args.tasks, TASKS)
    args.tasks = ",".join(names)
    if len(names) > 1:
        check_multitask_flags(args, names)
    else:
        for flag in ("task_weights", "task_learning_rates", "task_drop_probs",
                     "task_batch_sizes"):
            if getattr(args, flag) is not None:
                raise VLPError(f"--{flag} is for several --tasks; this run has one")
    if args.grounding_objective != "regions" and "refcoco" not in names:
        raise VLPError(f"--grounding_objective {args.grounding_objective} is for --tasks "
                       f"refcoco; this run's tasks are {args.tasks}")
    for one in task_args(args):
        if one.tasks == "refcoco":
            check_grounding_flags(one)
    if args.from_scratch and args.model_recover_path:
        raise VLPError("--from_scratch conflicts with --model_recover_path")
    if args.bert_model is None and args.model_recover_path is None:
        raise VLPError("give --bert_model (a Hugging Face BERT directory) or "
                       "--model_recover_path")
    if args.features is None and args.image_root is None:
        raise VLPError("give --features STORE, or --image_root with VLP's --region_* files")
    if args.warmup_proportion < 0 or args.warmup_proportion > 1:
        raise VLPError(f"--warmup_proportion must be in [0, 1], got {args.warmup_proportion}")
    # VLP's defaults for every task: in VQA they mask question tokens too (its README
    # passes --mask_prob 0 --max_pred 1, one token); --max_pred 0 masks none.
    args.mask_prob = 0.15 if args.mask_prob is None else args.mask_prob
    args.max_pred = 3 if args.max_pred is None else args.max_pred
    args.mask_vqa_input = args.tasks == "vqa2" and args.max_pred > 0
    if args.tasks != "img2txt" and args.scst:
        raise VLPError("--scst is for captioning (--tasks img2txt)")
    if args.max_drop_worst_ratio > 0 and (args.tasks != "img2txt" or args.scst):
        raise VLPError("--max_drop_worst_ratio drops masked-LM examples: it is for pretraining "
                       "and caption finetuning, not " + ("--scst" if args.scst
                                                         else f"--tasks {args.tasks}"))
    if args.output_vocab == "train" and "img2txt" not in names:
        raise VLPError("--output_vocab train takes the tokens of the training captions: it "
                       "needs --tasks img2txt")
    if args.vqa_annotations and "vqa2" not in names:
        raise VLPError("--vqa_annotations is for --tasks vqa2")
    check_answer_vocab_flags(args)
    if args.block_masked_regions and not args.vis_mask_prob > 0:
        raise VLPError("--block_masked_regions needs --vis_mask_prob above 0")
    if args.vis_mask_prob > 0 and args.scst:
        raise VLPError("--vis_mask_prob hides regions in masked-LM and VQA training, not --scst")
    if args.config_path and not Path(args.config_path).is_file():
        raise VLPError(f"--config_path {args.config_path}: no such file")
    if args.scst and not args.model_recover_path:
        raise VLPError("--scst starts from a cross-entropy checkpoint: give --model_recover_path")
    if args.scst and args.scst_baseline == "mean" and args.scst_samples < 2:
        raise VLPError("--scst_baseline mean needs --scst_samples of at least 2")
    args.dist_url = args.dist_url.replace("[PT_OUTPUT_DIR]", args.output_dir)
    if args.model_recover_path:
        # VLP's commands name the previous run's model.N.bin; a vlp run wrote model.N/.
        args.model_recover_path = str(resolve(args.model_recover_path))
    return args


def check_multitask_flags(args: argparse.Namespace, names: list[str]) -> None:
    if args.task_weights is not None and (len(args.task_weights) != len(names)
                                          or min(args.task_weights) <= 0):
        raise VLPError(f"--task_weights {' '.join(map(str, args.task_weights))}: give one "
                       f"positive weight per task of --tasks {args.tasks}")
    for flag, on in (("--scst", args.scst), ("--fsdp", args.fsdp)):
        if on:
            raise VLPError(f"{flag} trains one task; --tasks {args.tasks} names several")
    if args.vqa_annotations and "vqa2" not in names:
        raise VLPError("--vqa_annotations is for --tasks vqa2")
    args.task_learning_rates = per_task_values("--task_learning_rates", args.task_learning_rates,
                                               names, lambda v: v > 0, "a positive rate")
    args.task_drop_probs = per_task_values("--task_drop_probs", args.task_drop_probs, names,
                                           lambda v: 0 <= v < 1, "a rate in [0, 1)")
    accumulation = args.gradient_accumulation_steps
    sizes = per_task_values("--task_batch_sizes", args.task_batch_sizes, names,
                            lambda v: v == int(v) and v >= 1 and int(v) % accumulation == 0,
                            f"a batch size, a multiple of --gradient_accumulation_steps "
                            f"{accumulation}")
    args.task_batch_sizes = {name: int(n) for name, n in sizes.items()}


def per_task_values(flag: str, entries: list[str] | None, names: list[str], valid,
                    what: str) -> dict[str, float]:
    """TASK:VALUE entries -> {task: value}, each task at most once."""
    values: dict[str, float] = {}
    for entry in entries or []:
        name, sep, text = entry.partition(":")
        try:
            value = float(text)
        except ValueError:
            value = None
        if not sep or name not in names or name in values or value is None or not valid(value):
            raise VLPError(f"{flag} {entry}: give TASK:VALUE, TASK one of {', '.join(names)} "
                           f"(each once) and VALUE {what}")
        values[name] = value
    return values


def check_grounding_flags(args: argparse.Namespace) -> None:
    """--tasks refcoco: a refs(<split_by>).p per --src_file, RefCOCO's split names (VLP's
    caption default, train restval, becomes train), no masking, no SCST."""
    from vlp.data.grounding import refer_location

    for path in args.src_file:
        refer_location(path)
    if list(args.split) == list(TRAIN_SPLITS):
        args.split = ["train"]
    if args.scst:
        raise VLPError("--scst is for captioning (--tasks img2txt), not --tasks refcoco")
    if args.vis_mask_prob > 0:
        raise VLPError("--vis_mask_prob masks regions in masked-LM and VQA training, not "
                       "--tasks refcoco")


def build_parser(prog: str = "vlp train") -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            description="Pretrain or finetune UnifiedVLP (VLP's flags).")
    return add_arguments(parser)
