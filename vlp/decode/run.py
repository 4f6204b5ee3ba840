"""`vlp decode` / `python -m vlp.decode_img2txt`: caption a split, write COCO results and,
when the split has references, the metrics beside them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vlp.data.captions import read_images, read_valid_jpgs
from vlp.data.region_text import RegionImages, pad_regions
from vlp.data.sources import keep_present, open_features
from vlp.decode import CaptionGenerator, SearchSettings
from vlp.errors import VLPError
from vlp.model.load import checkpoint_name


def checkpoints(pattern: str) -> list[Path]:
    from vlp.model.load import expand

    return expand(pattern)


def load_model(path: Path, bert_dir=None, config_file=None):
    """The checkpoint's model as VLP's decoder had it: sizes a VLP .bin does not store
    from --config_path (else --bert_model's config.json), and a --relax_projection
    masked-LM head cut to its seq2seq projection, as VLP loaded it into a one-projection
    decoder."""
    from vlp.model.config import RELAX_TASK_INDEX
    from vlp.model.convert import check_config_file, fit_relax_projection
    from vlp.model.load import load

    overrides = {"config_file": Path(config_file)} if config_file else {}
    model = load(path, bert_dir, **overrides)
    if config_file:
        check_config_file(model.config, Path(config_file), path)
    return fit_relax_projection(model, 0, RELAX_TASK_INDEX["s2s"])


def valid_images(args) -> set[str] | None:
    """--file_valid_jpgs filters Conceptual Captions only: VLP's decoding ignored it for
    COCO and Flickr30k, whose Karpathy splits name only images that have features."""
    if not args.file_valid_jpgs:
        return None
    if args.dataset in ("coco", "flickr30k"):
        print(f"--file_valid_jpgs is not used for --dataset {args.dataset} (as in VLP): "
              "every image of the split is decoded", file=sys.stderr)
        return None
    return read_valid_jpgs(args.file_valid_jpgs)


def vocabulary_dir(args, checkpoint: Path) -> Path:
    for candidate in (args.bert_model, checkpoint if checkpoint.is_dir() else None):
        if candidate and (Path(candidate) / "vocab.txt").is_file():
            return Path(candidate)
    raise VLPError(f"{checkpoint} has no vocab.txt: pass --bert_model with its vocabulary")


def ignored_tokens(tokenizer, words: str | None,
                   source: str = "--forbid_ignore_word") -> tuple[int, ...]:
    """--forbid_ignore_word's token ids: words between "|", "[sep]" read as "[SEP]"; an
    unknown word is named with `source` (the flag, or the file that gave the words)."""
    if not words:
        return ()
    words = [w.upper() if w.startswith("[") and w.endswith("]") else w for w in words.split("|")]
    unknown = [w for w in words if w not in tokenizer.vocab]
    if unknown:
        raise VLPError(f"{source}: {' '.join(unknown)} not in the vocabulary "
                       "(one word piece per word, '|' between them)")
    return tuple(tokenizer.convert_tokens_to_ids(words))


def settings(args, tokenizer, config) -> SearchSettings:
    ignore = ignored_tokens(tokenizer, args.forbid_ignore_word)
    return SearchSettings(eos_id=config.sep_token_id, max_length=args.max_tgt_length,
                          beam_size=args.beam_size, min_length=args.min_len,
                          length_penalty=args.length_penalty, length_norm=args.length_norm,
                          forbid_duplicate_ngrams=args.forbid_duplicate_ngrams,
                          ngram_size=args.ngram_size, forbid_ignore=ignore)


def caption_text(tokenizer, ids: list[int]) -> str:
    """VLP's detokenisation: word pieces joined, words separated by spaces."""
    words: list[str] = []
    for tok in tokenizer.convert_ids_to_tokens(ids):
        if tok in ("[SEP]", "[PAD]"):
            break
        if tok.startswith("##") and words:
            words[-1] += tok[2:]
        else:
            words.append(tok)
    return " ".join(words)


def decode(args) -> list[dict]:
    """Decode with every checkpoint `--model_recover_path` matches; returns one summary
    per checkpoint: {"checkpoint", "results", "metrics" (or None)}."""
    from vlp.data.tokens import load_tokenizer

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    valid = valid_images(args)
    images = read_images([args.src_file], args.split, args.dataset, valid)
    store = open_features(args)
    present = keep_present((i.image_key for i in images), store, args.skip_missing_features,
                           lambda message: print(message, file=sys.stderr))
    images = [i for i in images if i.image_key in present]
    summaries = []
    for path in checkpoints(args.model_recover_path):
        model = load_model(path, args.bert_model, args.config_path).to(device).eval()
        tokenizer = load_tokenizer(vocabulary_dir(args, path), args.do_lower_case)
        if args.len_vis_input > model.config.max_regions:
            raise VLPError(f"--len_vis_input {args.len_vis_input} is more than {path} takes "
                           f"(max_regions {model.config.max_regions})")
        generator = CaptionGenerator(model, settings(args, tokenizer, model.config),
                                     use_cache=not args.no_kv_cache)
        results = caption_images(generator, images, store, args, device, tokenizer)
        summary = write_outputs(args, path, results)
        if args.grounding:
            summary["grounding"] = score_grounding(args, path, model, store, present,
                                                   tokenizer, device)
        summaries.append(summary)
    return summaries


def score_grounding(args, checkpoint: Path, model, store, present, tokenizer, device) -> dict:
    """--grounding: the split's reference captions scored with their images' regions and
    with another image's (vlp.eval.grounding), written beside the results."""
    from vlp.data.captions import read_captions
    from vlp.eval.grounding import score_references
    from vlp.precision import autocast, choose

    # `present` holds the decoded images only (after --file_valid_jpgs).
    captions = [c for c in read_captions([args.src_file], (args.split,))
                if c.image_key in present]
    with autocast(choose(False, args.fp16, device), device):
        # Scoring keeps no beams: rows of a larger batch cost little more than a small one's.
        g = score_references(model, captions, store, tokenizer, args.len_vis_input,
                             args.box_norm, args.max_tgt_length, max(args.batch_size, 128),
                             device, progress=not args.no_progress)
    out_dir = Path(args.output_dir) if args.output_dir else checkpoint.parent
    path = out_dir / f"{checkpoint_name(checkpoint)}.{args.split}.grounding.json"
    path.write_text(json.dumps(g.as_dict(), indent=2) + "\n")
    print(f"  {g.summary()} -> {path}")
    return g.as_dict()


def caption_images(generator, images, store, args, device, tokenizer) -> list[dict]:
    from vlp.precision import autocast, choose

    dataset = RegionImages([i.image_key for i in images], store, args.len_vis_input, args.box_norm,
                           generator.model.config.region_box_octaves)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers,
                        collate_fn=_as_list)
    precision = choose(False, args.fp16, device)
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), desc=f"decode {args.split}", unit="img", dynamic_ncols=True)
    results = []
    for examples in loader:
        feats, locs, n = (t.to(device) for t in pad_regions(examples))
        with autocast(precision, device):
            hyps = generator.generate(feats, locs, n)
        for e, h in zip(examples, hyps):
            results.append({"image_id": images[e["index"]].image_id,
                            "caption": caption_text(tokenizer, h.tokens)})
        if bar is not None:
            bar.update(len(examples))
    if bar is not None:
        bar.close()
    return results


def _as_list(examples: list[dict]) -> list[dict]:
    return examples


def write_outputs(args, checkpoint: Path, results: list[dict]) -> dict:
    out_dir = Path(args.output_dir) if args.output_dir else checkpoint.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{checkpoint_name(checkpoint)}.{args.split}.beam{args.beam_size}"
    results_path = out_dir / f"{stem}.results.json"
    results_path.write_text(json.dumps(results, ensure_ascii=False) + "\n")
    metrics = truth = None
    if not args.no_eval:
        metrics = score(results_path, args)
        truth = score_truth(results, args, out_dir / f"{stem}.truth.json")
        if truth is not None:
            metrics = {**(metrics or {}), "truth": truth.as_dict()}
        if metrics is not None:
            (out_dir / f"{stem}.metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"{checkpoint}: {len(results)} captions -> {results_path}")
    if metrics:
        print("  " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()
                               if isinstance(v, (int, float))))
    if truth is not None:
        print(f"  {truth.summary()} (per caption: {out_dir / f'{stem}.truth.json'})")
    return {"checkpoint": str(checkpoint), "results": str(results_path), "metrics": metrics}


def score_truth(results: list[dict], args, path: Path):
    """On ToyWorld (its scenes file beside --src_file): every claim of each caption checked
    against the shapes drawn (vlp.eval.caption_truth), each caption's verdict written to
    `path`; None for other datasets."""
    from vlp.eval.caption_truth import check_results
    from vlp.eval.toyworld_scenes import scenes_file

    if scenes_file(args.src_file) is None:
        return None
    report = check_results(results, args.src_file, args.dataset)
    path.write_text(json.dumps(report.as_dict(verdicts=True), indent=1) + "\n")
    return report


def score(results_path: Path, args) -> dict | None:
    """coco-caption metrics against the split's reference sentences (none in the file:
    None). References are keyed by the same ids the results use (results_image_id)."""
    from vlp.data.captions import results_image_id

    data = json.loads(Path(args.src_file).read_text())
    annotations = [{"image_id": results_image_id(img, args.dataset), "caption": s["raw"]}
                   for img in data.get("images", []) if img.get("split") == args.split
                   for s in img.get("sentences", [])]
    if not annotations:
        return None
    import warnings

    from coco_caption import evaluate

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = evaluate(str(results_path), {"annotations": annotations}, java=not args.no_java)
    for w in caught:
        if issubclass(w.category, UserWarning):  # not the interpreter's ResourceWarnings
            print(f"warning: {w.message}", file=sys.stderr)
    return metrics
