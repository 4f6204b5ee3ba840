"""VQA 2.0 finetuning: questions as text, soft answer targets, VLP's classifier head.

The head reads [CLS] * first [SEP] (VLP's input to its answer classifier), every
example is bidirectional, and the loss is binary cross-entropy with logits over the K
answers, times K (VLP's sum over answers, mean over the batch). No text is masked unless
--max_pred is given: VLP's `--mask_prob 0 --max_pred 1` replaced one question token.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vlp.data.captions import Caption, image_key_map
from vlp.data.vqa import read_vqa
from vlp.errors import VLPError
from vlp.model import MaskDraws, UnifiedVLP, mask_text

VOCAB_FILE = "answer_vocab.json"


def load_questions(args) -> tuple[list[Caption], list[tuple[str, ...]]]:
    """Questions (as Caption: image key, question id, text) and their annotators' answers
    from each --src_file (imdb .npy, or questions JSON with its --vqa_annotations)."""
    annotations = args.vqa_annotations or [None] * len(args.src_file)
    if len(annotations) != len(args.src_file):
        raise VLPError(f"--vqa_annotations gives {len(annotations)} files for "
                       f"{len(args.src_file)} --src_file files; pair them one to one")
    keys = image_key_map(args.image_map) if args.image_map else None
    questions, answers = [], []
    for source, annotation in zip(args.src_file, annotations):
        for ex in read_vqa(source, annotation, require_answers=True):
            key = ex.image_name or (keys.get(str(ex.image_id)) if keys else str(ex.image_id))
            if key is None:
                raise VLPError(f"{source}: image id {ex.image_id} (question {ex.question_id}) "
                               f"is not in --image_map {' '.join(args.image_map)}")
            questions.append(Caption(key, ex.question_id, ex.question))
            answers.append(ex.answers)
    return questions, answers


def answer_vocabulary(args, answers, output_dir: Path, is_main: bool, barrier):
    """--answer_vocab, else the run's own (output_dir/answer_vocab.json, kept across
    resumes), else the --num_answers most frequent training answers."""
    from vlp.eval.vqa_answers import AnswerVocab, build_vocab

    saved = Path(output_dir) / VOCAB_FILE
    if is_main and not saved.is_file():
        vocab = (AnswerVocab.load(args.answer_vocab) if args.answer_vocab
                 else build_vocab(answers, args.num_answers))
        vocab.save(saved)
    barrier()
    return AnswerVocab.load(saved)


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
    unused_parts = ("mlm_head",)

    def __init__(self, model: UnifiedVLP, mask_input: bool):
        super().__init__()
        self.model, self.mask_input = model, mask_input

    def forward(self, text_ids, text_lengths, region_features, region_locations, num_regions,
                targets, mask_order, mask_kind, mask_coin, mask_random_ids) -> dict:
        if self.mask_input:
            draws = MaskDraws(mask_order, mask_kind, mask_coin, mask_random_ids)
            text_ids = mask_text(text_ids, text_lengths, self.model.config, draws=draws).input_ids
        logits = self.logits(text_ids, text_lengths, region_features, region_locations,
                             num_regions)
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets) * targets.shape[1]
        return {"loss": loss}

    def logits(self, text_ids, text_lengths, region_features, region_locations, num_regions):
        # VQA reads the whole question and every region: all bidirectional, no seq2seq.
        s2s = torch.zeros(text_ids.shape[0], dtype=torch.bool, device=text_ids.device)
        hidden = self.model(text_ids, text_lengths, region_features, region_locations,
                            num_regions, s2s)
        return self.model.vqa_logits(hidden, region_features.shape[1])

    @staticmethod
    def inputs(batch) -> dict:
        names = ("text_ids", "text_lengths", "region_features", "region_locations",
                 "num_regions", "targets", "mask_order", "mask_kind", "mask_coin",
                 "mask_random_ids")
        return {n: getattr(batch, n) for n in names}
