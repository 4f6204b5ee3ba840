"""Building a run from flags: features, captions, tokens, the dataset and the model."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vlp.data.captions import Caption, read_captions, read_valid_jpgs
from vlp.data.grounding import GroundingDataset
from vlp.data.mapped import KeyColumn, SoftTargets
from vlp.data.region_text import RegionTextDataset, TextSettings
from vlp.data.tokens import TokenizedTexts, WhitespaceTokenizer, cached_tokenize, load_tokenizer
from vlp.errors import VLPError
from vlp.model import UnifiedVLP
from vlp.model.load import load_with_kind, resolve
from vlp.train.model_flags import apply_model_flags, bert_overrides, scratch_config


def load_captions(args) -> list[Caption]:
    valid = None
    if args.file_valid_jpgs is not None:
        if not Path(args.file_valid_jpgs).is_file():
            raise VLPError(f"--file_valid_jpgs {args.file_valid_jpgs}: no such file (it is "
                           "never created; leave the flag out to keep every image)")
        valid = read_valid_jpgs(args.file_valid_jpgs)
    captions = read_captions(args.src_file, args.split, valid)
    if args.use_num_imgs > 0:
        keep = list(dict.fromkeys(c.image_key for c in captions))[:args.use_num_imgs]
        keep = set(keep)
        captions = [c for c in captions if c.image_key in keep]
    return captions


@dataclass
class RegionDims:
    feature_dim: int
    num_classes: int


def region_dims(store, key: str) -> RegionDims:
    record = store[key]
    return RegionDims(record.feature_dim, record.num_classes)


def tokenizer_dir(args, resume_dir: Path | None) -> Path:
    """Where the vocabulary comes from: --bert_model, else the checkpoint being loaded."""
    for candidate in (args.bert_model, resume_dir, args.model_recover_path):
        if candidate and Path(candidate).is_dir() and (Path(candidate) / "vocab.txt").is_file():
            return Path(candidate)
    raise VLPError("no vocab.txt in --bert_model, the checkpoint or --model_recover_path; "
                   "pass --bert_model with the BERT directory the model was trained from")


def check_vocabulary(tok_dir: Path, source) -> None:
    """The tokenizer's vocabulary must be the one the loaded checkpoint was trained with."""
    if source is None or not Path(source).is_dir():
        return
    theirs, ours = Path(source) / "vocab.txt", Path(tok_dir) / "vocab.txt"
    if theirs.is_file() and ours.is_file() and theirs.resolve() != ours.resolve() \
            and theirs.read_bytes() != ours.read_bytes():
        raise VLPError(f"the vocabulary of {source} differs from {tok_dir}'s; use the BERT "
                       "directory the checkpoint was trained from (or leave --bert_model out)")


def tokenize_captions(args, captions, tok_dir: Path, is_main: bool, barrier,
                      cache: Path | None = None) -> TokenizedTexts:
    """Tokenised once by the main rank into `cache` (output_dir/cache); the others read it."""
    tokenizer = load_tokenizer(tok_dir, args.do_lower_case)
    # VLP's --tokenized_input split the captions on spaces; ids still come from the vocabulary.
    splitter = WhitespaceTokenizer(tokenizer) if args.tokenized_input else tokenizer
    texts = [c.text for c in captions]
    cache = cache or Path(args.output_dir) / "cache"
    if is_main:
        tokens = cached_tokenize(splitter, texts, cache)
    barrier()
    if not is_main:
        tokens = cached_tokenize(splitter, texts, cache)
    return tokens, tokenizer


def build_dataset(args, tokens, captions, store, config, targets=None,
                  boxes=None, cache: Path | None = None) -> RegionTextDataset:
    """The training examples; image keys and VQA targets are memory-mapped from
    output_dir/cache as the tokens are, so DataLoader workers share one copy. With
    `boxes` (the referents of --tasks refcoco, [N, 4]) each example carries its regions'
    IoU with its referent."""
    text = TextSettings(sep_id=config.sep_token_id, vocab_size=config.vocab_size,
                        max_len_b=args.max_len_b, always_truncate_tail=args.always_truncate_tail,
                        max_pred=max(args.max_pred, 1), seed=args.seed)
    cache = cache or Path(args.output_dir) / "cache"
    keys = KeyColumn.of([c.image_key for c in captions]).mapped(cache, "keys")
    if targets is not None:
        targets = SoftTargets.of(targets).mapped(cache, "targets")
    common = (tokens, keys, store, args.len_vis_input, text, args.box_norm, targets,
              config.region_box_octaves, args.vis_mask_prob)
    if boxes is not None:
        return GroundingDataset(*common, boxes=boxes)
    return RegionTextDataset(*common)


def build_model(args, dims: RegionDims, resume_dir: Path | None) -> UnifiedVLP:
    """The model to train: a checkpoint being resumed, --model_recover_path's weights
    (a vlp checkpoint, VLP's model.N.bin, a BERT/UniLM-layout .bin or a BERT directory),
    BERT's weights (--bert_model), or random (--from_scratch)."""
    new_parts = dict(region_feature_dim=dims.feature_dim, region_hidden_size=dims.feature_dim,
                     region_classes=dims.num_classes, max_regions=args.len_vis_input,
                     type_vocab_size=6 if args.new_segment_ids else 2)
    objective = dict(mask_prob=args.mask_prob, max_pred=max(args.max_pred, 1),
                     s2s_prob=args.s2s_prob, bi_prob=args.bi_prob)
    # VLP's BERT hard-coded LayerNorm eps 1e-5 whatever the BERT was trained with.
    from_bert = dict(new_parts, **objective, layer_norm_eps=args.layer_norm_eps,
                     new_layer_init=args.new_layer_init, **bert_overrides(args))
    source = resume_dir or (resolve(args.model_recover_path) if args.model_recover_path else None)
    if source is not None:
        model, kind = load_with_kind(source, args.bert_model, **from_bert)
        new_regions = kind == "bert"
    elif args.from_scratch:
        model, new_regions = UnifiedVLP(scratch_config(args, from_bert)), True
    else:
        model, new_regions = UnifiedVLP.from_pretrained_bert(args.bert_model, **from_bert), True
    fc7 = fc7_dir(args, new_regions)
    if fc7 is not None:
        start_from_fc7(model, fc7, "--region_fc7" if args.region_fc7 else "--enable_butd")
    model.config = model.config.replace(**objective, new_layer_init=args.new_layer_init)
    model = apply_model_flags(model, args, resume_dir, source)
    model = with_region_input(model, args.box_frequencies, args.region_location, resume_dir,
                              source)
    if args.drop_prob is not None:
        model.set_dropout(args.drop_prob)
    check_fit(model.config, dims, args, source)
    return model


FC7_DIR = "detectron_weights"


def fc7_dir(args, new_regions: bool) -> Path | None:
    """Where the first region layer of a new model starts from: --region_fc7, or, with
    --enable_butd, VLP's detectron_weights/ under the working directory (VLP loaded
    fc7_{w,b}.pkl from there whenever it built a model, and stopped without them)."""
    if not new_regions:
        return None
    if args.region_fc7:
        return Path(args.region_fc7)
    if not args.enable_butd:
        return None
    folder = Path(FC7_DIR).absolute()
    missing = [n for n in ("fc7_w.pkl", "fc7_b.pkl") if not (folder / n).is_file()]
    if missing:
        raise VLPError(f"--enable_butd: no {folder / missing[0]} (VLP starts a new model's "
                       "region layer from detectron_weights/ in the working directory); give "
                       "--region_fc7 DIR, or leave out --enable_butd to start it at random")
    return folder


def start_from_fc7(model: UnifiedVLP, directory: str, flag: str = "--region_fc7") -> None:
    """VLP's start of the first region layer: the BUTD detector's fc7 (a resumed run or a
    trained checkpoint already has its own region layers, so there it does nothing)."""
    from vlp.model.fc7 import read_detectron_fc7

    weight, bias = read_detectron_fc7(directory)
    try:
        model.region.init_from_fc7(weight, bias)
    except VLPError as err:
        raise VLPError(f"{flag} {directory}: {err}") from None


def with_region_input(model: UnifiedVLP, frequencies: int | None, location: str | None,
                      resume_dir: Path | None, source: Path | None) -> UnifiedVLP:
    """`model` with --box_frequencies and --region_location applied (None: the model's
    own). A model with VLP's region input and no box sines/cosines gets fresh layers for
    what is asked; every other weight is kept. Any other change is refused."""
    have = model.config
    want = dict(region_box_frequencies=have.region_box_frequencies if frequencies is None
                else frequencies,
                region_location=location or have.region_location)
    if all(getattr(have, k) == v for k, v in want.items()):
        return model
    plain = have.region_box_frequencies == 0 and have.region_location == "vlp"
    if not plain or resume_dir is not None:
        asked = " ".join(f"--{flag} {v}" for flag, v in (("box_frequencies", frequencies),
                                                          ("region_location", location))
                         if v is not None)
        raise VLPError(f"{asked}: the model of {source} was trained with "
                       f"region_box_frequencies {have.region_box_frequencies}, region_location "
                       f"{have.region_location}; use those, or start from a checkpoint with "
                       "VLP's region input")
    return model.grown(**want)


def check_fit(config, dims: RegionDims, args, source) -> None:
    where = f" of {source}" if source is not None else ""
    if config.region_feature_dim != dims.feature_dim or config.region_classes != dims.num_classes:
        raise VLPError(f"the model{where} takes {config.region_feature_dim}-d region features "
                       f"and {config.region_classes} classes; the feature store has "
                       f"{dims.feature_dim}-d features and {dims.num_classes} classes")
    if args.len_vis_input > config.max_regions:
        raise VLPError(f"--len_vis_input {args.len_vis_input} is more than the model{where} "
                       f"takes (max_regions {config.max_regions})")
    longest = args.len_vis_input + args.max_len_b + 3
    if longest > config.max_position_embeddings:
        raise VLPError(f"--len_vis_input {args.len_vis_input} + --max_len_b {args.max_len_b} + 3 "
                       f"= {longest} positions; the model{where} has "
                       f"{config.max_position_embeddings}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy and random follow it.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def with_output_vocab(model: UnifiedVLP, args, caption_tokens) -> UnifiedVLP:
    """`model` scoring the tokens --output_vocab names: "all" the whole vocabulary (VLP's),
    "train" those of `caption_tokens` (the run's training captions, tokenised) with [PAD]
    and [SEP]; without the flag, the model's own. Captions a kept output vocabulary lacks
    a token of are an error naming the token, not a silent loss."""
    used = None if caption_tokens is None else np.unique(caption_tokens.ids)
    if args.output_vocab == "all":
        model.restrict_output(None)
    elif args.output_vocab == "train":  # check() made sure the run has captions
        special = {model.config.pad_token_id, model.config.sep_token_id}
        model.restrict_output(sorted(set(used.tolist()) | special))
    kept = model.config.output_vocab
    if kept is not None and used is not None:
        outside = np.setdiff1d(used, kept)
        if len(outside):
            raise VLPError(f"the model's output vocabulary ({len(kept)} tokens) lacks token "
                           f"id {int(outside[0])} of the training captions ({len(outside)} "
                           "such); train with --output_vocab train (or all)")
    return model

