"""`vlp eval-vqa` / `python -m vlp.eval_vqa2`: answer a split's questions with a VQA
checkpoint, write `[{"question_id", "answer"}]`, score it where annotations exist, and
write the challenge's file for test-dev / test-std."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vlp.errors import VLPError
from vlp.model.load import checkpoint_name

LEADERBOARD_SPLITS = {"test-dev": "test-dev2015", "test-std": "test2015",
                      "test-dev2015": "test-dev2015", "test2015": "test2015"}


def evaluate(args) -> list[dict]:
    from vlp.data.sources import keep_present, open_features

    from vlp.model.load import expand

    found = expand(args.model_recover_path)
    examples, keys = questions(args)
    store = open_features(args)
    present = keep_present(keys, store, args.skip_missing_features,
                           lambda m: print(m, file=sys.stderr))
    chosen = [i for i, k in enumerate(keys) if k in present]
    if len(chosen) < len(examples) and args.split in LEADERBOARD_SPLITS:
        raise VLPError("a leaderboard file needs an answer for every question; "
                       "--skip_missing_features cannot be used with --split " + args.split)
    examples, keys = [examples[i] for i in chosen], [keys[i] for i in chosen]
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    return [evaluate_checkpoint(path, args, examples, keys, store, device) for path in found]


# VLP's eval_vqa2.py scored val2014 answers against this file (its --ref_file default)
# under its code root, whatever the imdb held.
VLP_REF_FILE = Path("pythia/data/v2_mscoco_val2014_annotations.json")


def annotations_file(args) -> str | None:
    """--ref_file (--vqa_annotations), else VLP's default one for an imdb of val2014 where
    VLP kept it; else None (an imdb with answers is scored from them)."""
    if args.vqa_annotations:
        return args.vqa_annotations
    if Path(args.src_file).suffix == ".npy" and args.split in ("val", "val2014") and \
            VLP_REF_FILE.is_file():
        print(f"scoring against {VLP_REF_FILE.absolute()} (VLP's default --ref_file)",
              file=sys.stderr)
        return str(VLP_REF_FILE)
    return None


def questions(args):
    """The split's VQAExamples (with answers where the annotations are given) and the
    store key of each one's image."""
    from vlp.data.captions import image_key_map
    from vlp.data.vqa import read_vqa

    examples = read_vqa(args.src_file, annotations_file(args))
    mapping = image_key_map(args.image_map) if args.image_map else None
    keys = []
    for e in examples:
        key = e.image_name or (mapping.get(str(e.image_id)) if mapping else str(e.image_id))
        if key is None:
            raise VLPError(f"{args.src_file}: image id {e.image_id} is not in --image_map")
        keys.append(key)
    return examples, keys


def evaluate_checkpoint(path: Path, args, examples, keys, store, device) -> dict:
    from vlp.data.region_text import RegionTextDataset, TextSettings, collate
    from vlp.data.tokens import cached_tokenize, load_tokenizer
    from vlp.eval.vqa_answers import AnswerVocab
    from vlp.model.load import load

    model = load(path, args.bert_model).to(device).eval()
    if not model.config.vqa_answers:
        raise VLPError(f"{path} has no VQA head: a VQA checkpoint is expected")
    vocab = AnswerVocab.load(answer_vocab_file(args, path))
    if model.config.vqa_answers != len(vocab):
        raise VLPError(f"{path} has a VQA head for {model.config.vqa_answers} answers, the "
                       f"answer vocabulary {len(vocab)}")
    if not args.bert_model and not (path / "vocab.txt").is_file():
        raise VLPError(f"{path} has no vocab.txt: pass --bert_model with its vocabulary")
    tokenizer = load_tokenizer(Path(args.bert_model) if args.bert_model else path,
                               args.do_lower_case)
    tokens = cached_tokenize(tokenizer, [e.question for e in examples], None)
    text = TextSettings(sep_id=model.config.sep_token_id, vocab_size=model.config.vocab_size,
                        max_len_b=args.max_len_b, always_truncate_tail=True, max_pred=1)
    dataset = RegionTextDataset(tokens, keys, store, args.len_vis_input, text, args.box_norm,
                                box_frequencies=model.config.region_box_octaves)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers,
                        collate_fn=collate)
    predictions = predict(model, loader, vocab, examples, device, not args.no_progress)
    return write_outputs(args, path, predictions, examples)


def answer_vocab_file(args, checkpoint: Path) -> Path:
    """--answer_vocab, else the checkpoint's own, else (a VLP .bin) Pythia's answer list
    where VLP's scripts found it, under the working directory."""
    if args.answer_vocab:
        return Path(args.answer_vocab)
    if checkpoint.is_dir():
        return checkpoint / "answer_vocab.json"
    from vlp.eval.vqa_answers import PYTHIA_ANSWERS

    if PYTHIA_ANSWERS.is_file():
        return PYTHIA_ANSWERS
    raise VLPError(f"{checkpoint}: a VLP .bin stores no answer list; give --answer_vocab "
                   f"(Pythia's answers_vqa.txt; VLP read {PYTHIA_ANSWERS.absolute()})")


@torch.no_grad()
def predict(model, loader, vocab, examples, device, progress: bool) -> dict[int, str]:
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(loader.dataset), desc="answer", unit="q", dynamic_ncols=True)
    out = {}
    for batch in loader:
        batch = batch.to(device)
        bidirectional = torch.zeros(len(batch), dtype=torch.bool, device=device)
        hidden = model(batch.text_ids, batch.text_lengths, batch.region_features,
                       batch.region_locations, batch.num_regions, bidirectional)
        logits = model.vqa_logits(hidden, batch.region_features.shape[1])
        best = best_answers(logits, vocab).tolist()
        for i, answer in zip(batch.index.tolist(), best):
            out[examples[i].question_id] = vocab[answer]
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return out


def best_answers(logits: torch.Tensor, vocab, k: int | None = None):
    """Vocabulary index of the highest logit per row (with k, the top k values and indices),
    never `<unk>`: VLP took the argmax over logits[:, 1:] + 1 with Pythia's list."""
    start = vocab.first_answer
    if k is None:
        return logits[..., start:].argmax(-1) + start
    top = logits[..., start:].topk(min(k, logits.shape[-1] - start))
    return top.values, top.indices + start


def write_outputs(args, checkpoint: Path, predictions: dict[int, str], examples) -> dict:
    from vlp.eval.vqa_score import score, write_metrics
    from vlp.eval.vqa_submission import check_submission, submission_name, write_submission

    out_dir = Path(args.output_dir) if args.output_dir else checkpoint.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    subtype = LEADERBOARD_SPLITS.get(args.split)
    if subtype is not None:
        results = out_dir / submission_name(subtype, args.method)
        write_submission(predictions, args.src_file, results)
        defects, count = check_submission(results, args.src_file)
        if defects:
            raise VLPError(f"{results}: " + "; ".join(defects))
        print(f"{checkpoint}: {count} answers -> {results} (checked; ready to upload)")
    else:
        results = out_dir / f"{checkpoint_name(checkpoint)}.{args.split}.vqa_results.json"
        rows = [{"question_id": e.question_id, "answer": predictions[e.question_id]}
                for e in examples]
        results.write_text(json.dumps(rows) + "\n")
        print(f"{checkpoint}: {len(rows)} answers -> {results}")
    summary = {"checkpoint": str(checkpoint), "results": str(results), "scores": None}
    annotated = [e for e in examples if e.answers is not None]
    if annotated:  # annotations JSON, or the answers inside an imdb .npy
        scores = score(predictions, annotated, metric=args.vqa_metric)
        metrics = out_dir / f"{checkpoint_name(checkpoint)}.{args.split}.vqa_metrics.json"
        write_metrics(scores, metrics)
        print(scores.summary())
        summary["scores"] = scores
    return summary
