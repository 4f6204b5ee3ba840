"""A run's tasks as objects: each owns its examples, the head it adds to the model, its
training dataset and its loss module, so the trainer builds one or several of them alike
(`--tasks img2txt`, `vqa2`, `refcoco`, or several joined by commas).

    task = make(args)            # args: this task's flags (multitask.task_args splits them)
    captions = task.load()       # texts with their image keys
    task.keep(present)           # only images the feature store has
    model = task.grow(model, ...)
    dataset = task.dataset(tokens, store, model.config, cache)
    module = task.module(model, tokenizer, output_dir, info)
    task.check_evaluation(shared)                 # `vlp eval`, for every task first
    metrics = task.evaluate(checkpoint, shared)   # then {split: metrics} of each
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from functools import partial
from pathlib import Path

from vlp.data.grounding import boxes_of
from vlp.data.region_text import collate
from vlp.errors import VLPError
from vlp.model.grounding import HEAD
from vlp.train import distributed, grounding, setup, vqa
from vlp.train.tasks import MaskedLMTask


class TaskData(ABC):
    name = ""
    noun = "examples"
    new_head: str | None = None  # the parameters --head_learning_rate trains

    def __init__(self, args):
        self.args = args
        self.captions: list = []
        self.extra_files: list[Path] = []

    @abstractmethod
    def load(self) -> list:
        """Read the examples: their texts as Captions (image key, id, text)."""

    def keep(self, present: set) -> None:
        self.captions = [c for c in self.captions if c.image_key in present]

    def grow(self, model, source, output_dir: Path, info, say):
        """The model with this task's head."""
        return model

    def dataset(self, tokens, store, config, cache: Path):
        return setup.build_dataset(self.args, tokens, self.captions, store, config, cache=cache)

    def collate(self, config):
        return partial(collate, pad_id=config.pad_token_id)

    @abstractmethod
    def module(self, model, tokenizer, output_dir: Path, info):
        """The loss module over `model` (a batch in, {"loss", ...} out)."""

    def check_evaluation(self, shared: argparse.Namespace) -> None:
        """Whether `evaluate` can run with these files and flags (before any task runs)."""
        self._one_file()

    @abstractmethod
    def evaluate(self, checkpoint: Path, shared: argparse.Namespace) -> dict:
        """`checkpoint`'s metrics on each of this task's --split entries, by split, from its
        own evaluation command (`shared`: the flags every task's command takes alike)."""

    def _one_file(self) -> str:
        if len(self.args.src_file) != 1:
            raise VLPError(f"--src_file: {self.name} is evaluated on one file, got "
                           f"{len(self.args.src_file)} ({' '.join(self.args.src_file)})")
        return self.args.src_file[0]


# `vlp eval`'s own flags, which each task sets from its own entries.
OWN_FLAGS = {"model_recover_path", "src_file", "split", "vqa_annotations", "run", "command"}


def command_args(add_arguments, argv: list[str], shared: argparse.Namespace):
    """An evaluation command's flags: `argv`, then every flag that `shared` also has."""
    from vlp.flags import ArgumentParser

    args = add_arguments(ArgumentParser()).parse_args(argv)
    for name, value in vars(shared).items():
        if name not in OWN_FLAGS and hasattr(args, name):
            setattr(args, name, value)
    return args


class CaptionData(TaskData):
    """Captions: masked LM (pretraining, caption finetuning) or, with --scst, SCST."""
    name, noun = "img2txt", "captions"

    def load(self) -> list:
        self.captions = setup.load_captions(self.args)
        return self.captions

    def keep(self, present: set) -> None:
        super().keep(present)
        self.references = self.captions
        if self.args.scst and self.args.scst_reward == "standard":
            # One example per image (VLP's SCST, --scst_reward vlp, keeps one per caption).
            self.captions = list({c.image_key: c for c in reversed(self.captions)}.values())[::-1]

    def module(self, model, tokenizer, output_dir: Path, info):
        args = self.args
        if not args.scst:
            return MaskedLMTask(model, args.label_smoothing, args.max_drop_worst_ratio,
                                args.drop_after, args.vis_mask_prob > 0,
                                args.block_masked_regions)
        from vlp.decode import SearchSettings
        from vlp.train.scst import CiderReward, ScstTask

        reward = None
        if args.scst_reward == "standard":
            if info.is_main:
                reward = CiderReward.from_captions(self.references, output_dir)
            distributed.barrier()
            if not info.is_main:
                reward = CiderReward.from_captions(self.references, output_dir)
        search = SearchSettings(eos_id=model.config.sep_token_id, max_length=args.max_len_b + 1)
        return ScstTask(model, tokenizer, reward, search, args.scst_baseline, args.scst_samples,
                        args.scst_reward)

    def evaluate(self, checkpoint: Path, shared: argparse.Namespace) -> dict:
        """`vlp decode` of each split: coco-caption metrics (and, on ToyWorld, truth)."""
        from vlp.decode.args import add_arguments
        from vlp.decode.run import decode

        out = {}
        for split in self.args.split:
            args = command_args(add_arguments, ["--model_recover_path", str(checkpoint),
                                                "--src_file", self._one_file(),
                                                "--split", split], shared)
            out[split] = decode(args)[0]["metrics"]
        return out


class VQAData(TaskData):
    """VQA 2.0 questions with soft answer targets and the answer classifier."""
    name, noun, new_head = "vqa2", "questions", "vqa_head."

    def load(self) -> list:
        self.captions, self.examples = vqa.load_questions(self.args)
        return self.captions

    def keep(self, present: set) -> None:
        self.examples = [e for c, e in zip(self.captions, self.examples)
                         if c.image_key in present]
        super().keep(present)

    def grow(self, model, source, output_dir: Path, info, say):
        from vlp.eval.vqa_answers import build_targets

        vocab = vqa.answer_vocabulary(self.args, self.examples, output_dir, info.is_main,
                                      distributed.barrier)
        model = vqa.with_answer_head(model, len(vocab), source)
        self.targets, stats = build_targets((e.answers for e in self.examples), vocab)
        say(stats.summary())
        self.extra_files = [output_dir / vqa.VOCAB_FILE]
        return model

    def dataset(self, tokens, store, config, cache: Path):
        return setup.build_dataset(self.args, tokens, self.captions, store, config,
                                   self.targets, cache=cache)

    def collate(self, config):
        return partial(collate, pad_id=config.pad_token_id, num_answers=config.vqa_answers)

    def module(self, model, tokenizer, output_dir: Path, info):
        args = self.args
        return vqa.VQATask(model, args.mask_vqa_input, args.vis_mask_prob > 0,
                           args.block_masked_regions, getattr(args, "task_s2s_prob", None))

    def check_evaluation(self, shared: argparse.Namespace) -> None:
        files, splits = self.args.src_file, self.args.split
        annotations = shared.vqa_annotations or []
        if len(splits) != len(files) or annotations and len(annotations) != len(files):
            raise VLPError(f"--split {' '.join(splits)}: name each of the {len(files)} vqa2 "
                           "question files' split (vqa2:SPLIT, in --src_file order), with "
                           "one --vqa_annotations each if any")

    def evaluate(self, checkpoint: Path, shared: argparse.Namespace) -> dict:
        """`vlp eval-vqa` of each questions file, under its split name: official accuracy
        where its annotations are given (`--vqa_annotations`, one per file, in order)."""
        from vlp.eval.args import add_vqa_arguments as add_arguments
        from vlp.eval.vqa_predict import evaluate

        self.check_evaluation(shared)
        annotations = shared.vqa_annotations or []
        out = {}
        for k, (questions, split) in enumerate(zip(self.args.src_file, self.args.split)):
            argv = ["--model_recover_path", str(checkpoint), "--src_file", questions,
                    "--split", split]
            if annotations:
                argv += ["--vqa_annotations", annotations[k]]
            scores = evaluate(command_args(add_arguments, argv, shared))[0]["scores"]
            out[split] = ({name: v for name, v in scores.to_json().items()
                           if name != "perQuestion"} if scores is not None else {})
        return out


class GroundingData(TaskData):
    """Referring expressions with their referents' boxes and the localization head."""
    name, noun = "refcoco", "expressions"

    @property
    def new_head(self) -> str:
        return HEAD[self.args.grounding_objective][1] + "."

    def load(self) -> list:
        self.captions, self.expressions = grounding.load_expressions(self.args)
        return self.captions

    def keep(self, present: set) -> None:
        self.expressions = [e for e in self.expressions if e.image_key in present]
        super().keep(present)

    def grow(self, model, source, output_dir: Path, info, say):
        return grounding.with_grounding_head(model, self.args.grounding_objective)

    def dataset(self, tokens, store, config, cache: Path):
        return setup.build_dataset(self.args, tokens, self.captions, store, config,
                                   boxes=boxes_of(self.expressions), cache=cache)

    def module(self, model, tokenizer, output_dir: Path, info):
        return grounding.GroundingTask(model, self.args.grounding_objective)

    def evaluate(self, checkpoint: Path, shared: argparse.Namespace) -> dict:
        """`vlp eval-grounding` of every split: Acc@0.5 overall and by expression kind."""
        from vlp.eval.args import add_grounding_arguments as add_arguments
        from vlp.eval.grounding_predict import evaluate

        args = command_args(add_arguments, ["--model_recover_path", str(checkpoint),
                                            "--src_file", self._one_file(),
                                            "--split", *self.args.split,
                                            # `vlp eval` (no such flag): the checkpoint's
                                            "--grounding_objective",
                                            getattr(self.args, "grounding_objective", "auto")],
                           shared)
        return evaluate(args)[0]["splits"]


KINDS = {k.name: k for k in (CaptionData, VQAData, GroundingData)}


def make(args) -> TaskData:
    """The task object for flags whose --tasks names one task."""
    return KINDS[args.tasks](args)
