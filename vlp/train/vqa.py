"""VQA 2.0 finetuning: questions as text, soft answer targets, VLP's classifier head.

The head reads [CLS] * first [SEP] (VLP's input to its answer classifier), every
example is bidirectional, and the loss is binary cross-entropy with logits over the K
answers, times K (VLP's sum over answers, mean over the batch). No text is masked unless
--max_pred is given: VLP's `--mask_prob 0 --max_pred 1` replaced one question token.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vlp.data.captions import Caption, image_key_map
from vlp.data.vqa import VQAExample, read_vqa
from vlp.errors import VLPError
from vlp.model import MaskDraws, UnifiedVLP, mask_text

VOCAB_FILE = "answer_vocab.json"


def load_questions(args) -> tuple[list[Caption], list[VQAExample]]:
    """Questions (as Caption: image key, question id, text) and their examples (with the
    annotators' answers) from each --src_file (imdb .npy, or questions JSON with its
    --vqa_annotations)."""
    annotations = args.vqa_annotations or [None] * len(args.src_file)
    if len(annotations) != len(args.src_file):
        raise VLPError(f"--vqa_annotations gives {len(annotations)} files for "
                       f"{len(args.src_file)} --src_file files; pair them one to one")
    keys = image_key_map(args.image_map) if args.image_map else None
    questions, examples = [], []
    for source, annotation in zip(args.src_file, annotations):
        for ex in read_vqa(source, annotation, require_answers=True):
            key = ex.image_name or (keys.get(str(ex.image_id)) if keys else str(ex.image_id))
            if key is None:
                raise VLPError(f"{source}: image id {ex.image_id} (question {ex.question_id}) "
                               f"is not in --image_map {' '.join(args.image_map)}")
            questions.append(Caption(key, ex.question_id, ex.question))
            examples.append(ex)
    if args.use_num_imgs > 0:
        # VLP's --use_num_imgs counted questions in VQA (the first N of the files).
        questions, examples = questions[:args.use_num_imgs], examples[:args.use_num_imgs]
    return questions, examples


def answer_vocabulary(args, examples: list[VQAExample], output_dir: Path, is_main: bool,
                      barrier):
    """--answer_vocab, else the run's own (output_dir/answer_vocab.json, kept across
    resumes), else Pythia's answers_vqa.txt where VLP read it (pythia/data/vocabs/ under
    the working directory), else one built from the training questions by
    --answer_vocab_from (Pythia's rule by default)."""
    from vlp.eval.vqa_answers import PYTHIA_ANSWERS, AnswerVocab

    saved = Path(output_dir) / VOCAB_FILE
    if is_main and not saved.is_file():
        source = args.answer_vocab
        if source is None and args.answer_vocab_from == "multiple_choice_answer" \
                and PYTHIA_ANSWERS.is_file():
            # VLP's loader read Pythia's list from there (its README unpacks it there).
            source = PYTHIA_ANSWERS
            print(f"answer list {PYTHIA_ANSWERS.absolute()} (VLP's, under the working "
                  "directory)", flush=True)
        vocab = AnswerVocab.load(source) if source else build_answer_vocab(args, examples)
        vocab.save(saved)
    barrier()
    return AnswerVocab.load(saved)


def build_answer_vocab(args, examples: list[VQAExample]):
    """Pythia's answers_vqa.txt rule on the questions' multiple_choice_answer (VLP's), or
    the --num_answers most frequent of all annotators' answers."""
    from vlp.eval.vqa_answers import build_pythia_vocab, build_vocab

    if args.answer_vocab_from == "all_answers":
        return build_vocab((e.answers for e in examples), args.num_answers)
    return build_pythia_vocab(((e.question_id, consensus_answer(e)) for e in examples),
                              args.answer_min_count)


def consensus_answer(example: VQAExample) -> str:
    """The question's multiple_choice_answer. An imdb stores none, so (as VQA defines it)
    the most frequent of the annotators' answers stands in; ties go to the first given."""
    if example.multiple_choice_answer is not None:
        return example.multiple_choice_answer
    return Counter(example.answers).most_common(1)[0][0]


def with_answer_head(model: UnifiedVLP, answers: int, source) -> UnifiedVLP:
    """The model with a K-answer head: kept when it has one of that size, added (random)
    when it has none."""
    have = model.config.vqa_answers
    if have == answers:
        return model
    if have:
        raise VLPError(f"{source} has a VQA head for {have} answers; the answer vocabulary "
                       f"has {answers} (use the checkpoint's {VOCAB_FILE} via --answer_vocab)")
    return model.grown(vqa_answers=answers)


class VQATask(nn.Module):
    heads = ("vqa_head",)

    def __init__(self, model: UnifiedVLP, mask_input: bool, masks_regions: bool = False,
                 block_masked: bool = False, s2s_prob: float | None = None):
        super().__init__()
        self.model, self.mask_input = model, mask_input
        self.s2s_prob = s2s_prob  # None: the model's (--s2s_prob); a multi-task run's 0
        self.masks_regions = masks_regions  # batches carry region_masked (--vis_mask_prob)
        self.block_masked = block_masked    # --block_masked_regions

    def forward(self, text_ids, text_lengths, region_features, region_locations, num_regions,
                targets, mask_order, mask_kind, mask_coin, mask_random_ids, s2s_draw,
                region_masked=None) -> dict:
        if self.mask_input:
            draws = MaskDraws(mask_order, mask_kind, mask_coin, mask_random_ids)
            text_ids = mask_text(text_ids, text_lengths, self.model.config, draws=draws).input_ids
        # VLP drew each training example's objective by --s2s_prob / --bi_prob for VQA too
        # (its README passes --s2s_prob 0 --bi_prob 1: with seq2seq, [CLS] and the first
        # [SEP] the answer is read from see only the image).
        s2s = s2s_draw < (self.model.config.s2s_prob if self.s2s_prob is None else self.s2s_prob)
        hidden, parts = self.model.encode(text_ids, text_lengths, region_features,
                                          region_locations, num_regions, s2s,
                                          region_masked=region_masked,
                                          block_masked=self.block_masked)
        logits = self.model.vqa_logits(hidden, region_features.shape[1])
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets) * targets.shape[1]
        if region_masked is None:
            return {"loss": loss}
        # VLP added its masked-region loss to the VQA loss too.
        region_loss = self.model.masked_region_loss(hidden, parts, region_masked)
        return {"loss": loss + region_loss, "vqa_loss": loss.detach(),
                "region_loss": region_loss.detach()}

    def logits(self, text_ids, text_lengths, region_features, region_locations, num_regions):
        hidden = self.model(text_ids, text_lengths, region_features, region_locations,
                            num_regions, self._bidirectional(text_ids))
        return self.model.vqa_logits(hidden, region_features.shape[1])

    @staticmethod
    def _bidirectional(text_ids: torch.Tensor) -> torch.Tensor:
        # Answering reads the whole question and every region, as VLP's eval_vqa2.py did.
        return torch.zeros(text_ids.shape[0], dtype=torch.bool, device=text_ids.device)

    @staticmethod
    def inputs(batch) -> dict:
        names = ("text_ids", "text_lengths", "region_features", "region_locations",
                 "num_regions", "targets", "mask_order", "mask_kind", "mask_coin",
                 "mask_random_ids", "s2s_draw", "region_masked")
        return {n: getattr(batch, n) for n in names}
