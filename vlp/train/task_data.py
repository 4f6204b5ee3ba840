"""A run's tasks as objects: each owns its examples, the head it adds to the model, its
training dataset and its loss module, so the trainer builds one or several of them alike
(`--tasks img2txt`, `vqa2`, `refcoco`, or several joined by commas).

    task = make(args)            # args: this task's flags (multitask.task_args splits them)
    captions = task.load()       # texts with their image keys
    task.keep(present)           # only images the feature store has
    model = task.grow(model, ...)
    dataset = task.dataset(tokens, store, model.config, cache)
    module = task.module(model, tokenizer, output_dir, info)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import partial
from pathlib import Path

from vlp.data.grounding import boxes_of
from vlp.data.region_text import collate
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


class GroundingData(TaskData):
    """Referring expressions with their referents' boxes and the localization head."""
    name, noun, new_head = "refcoco", "expressions", "grounding_head."

    def load(self) -> list:
        self.captions, self.expressions = grounding.load_expressions(self.args)
        return self.captions

    def keep(self, present: set) -> None:
        self.expressions = [e for e in self.expressions if e.image_key in present]
        super().keep(present)

    def grow(self, model, source, output_dir: Path, info, say):
        return grounding.with_grounding_head(model)

    def dataset(self, tokens, store, config, cache: Path):
        return setup.build_dataset(self.args, tokens, self.captions, store, config,
                                   boxes=boxes_of(self.expressions), cache=cache)

    def module(self, model, tokenizer, output_dir: Path, info):
        return grounding.GroundingTask(model)


KINDS = {k.name: k for k in (CaptionData, VQAData, GroundingData)}


def make(args) -> TaskData:
    """The task object for flags whose --tasks names one task."""
    return KINDS[args.tasks](args)
