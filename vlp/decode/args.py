"""The flags of `vlp decode` (VLP's decode_img2txt.py flags), shared by the command and by
training runs that decode their own checkpoints."""

from __future__ import annotations

import argparse

from vlp.data.sources import add_feature_flags
from vlp.flags import add_accepted_flags, add_run_flags, int_at_least


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = p.add_argument_group("VLP's flags (same meanings)")
    g.add_argument("--model_recover_path", required=True,
                   help="checkpoint(s) to decode with: vlp checkpoint directories or VLP "
                   "model.N.bin files; a glob decodes each match")
    g.add_argument("--bert_model", help="BERT directory with the vocabulary (default: the "
                   "checkpoint directory's own vocab.txt)")
    g.add_argument("--config_path", default=None,
                   help="a BERT config JSON giving what a VLP model.N.bin does not store "
                   "(attention heads, activation) instead of --bert_model's; a vlp "
                   "checkpoint's own config must agree with it")
    g.add_argument("--do_lower_case", action="store_true")
    g.add_argument("--new_segment_ids", action="store_true",
                   help="accepted; the checkpoint's config says which scheme it uses")
    g.add_argument("--batch_size", type=int_at_least(1), default=4)
    g.add_argument("--beam_size", type=int_at_least(1), default=1)
    g.add_argument("--length_penalty", type=float, default=0.0,
                   help="beam search: score + penalty x length (VLP), or the GNMT alpha")
    g.add_argument("--forbid_duplicate_ngrams", action="store_true")
    g.add_argument("--forbid_ignore_word", default=None,
                   help="words (|-separated) never blocked, after which nothing is blocked")
    g.add_argument("--ngram_size", type=int_at_least(1), default=3)
    g.add_argument("--min_len", type=int_at_least(0), default=0)
    g.add_argument("--max_tgt_length", type=int_at_least(1), default=20)
    g.add_argument("--src_file", required=True, help="Karpathy-style JSON with the split")
    g.add_argument("--dataset", choices=("coco", "flickr30k", "cc"), default="coco")
    g.add_argument("--split", default="val")
    g.add_argument("--len_vis_input", type=int_at_least(1), default=100)
    g.add_argument("--file_valid_jpgs", default=None)
    g.add_argument("--fp16", action="store_true", help="float16 autocast on CUDA")
    g.add_argument("--amp", action="store_true",
                   help="with --fp16, as --fp16; alone, float32 (as in VLP)")
    g.add_argument("--seed", type=int, default=123)
    add_feature_flags(g)
    # Decoding runs without dropout; the checkpoint's config.json holds its position table.
    add_accepted_flags(p, "decode_img2txt.py", values=(("--drop_prob", float),
                                                        ("--max_position_embeddings", int)))
    m = p.add_argument_group("further flags")
    m.add_argument("--length_norm", choices=("additive", "gnmt"), default="additive")
    m.add_argument("--no_kv_cache", action="store_true",
                   help="recompute the whole sequence each step (same output; slower)")
    m.add_argument("--no_java", action="store_true",
                   help="score with the pure-Python tokenizer and metrics")
    m.add_argument("--no_eval", action="store_true", help="write results only")
    m.add_argument("--grounding", action="store_true",
                   help="also score the split's reference captions with their own images' "
                   "regions and with another image's: the nats per token the image is worth")
    add_run_flags(m)
    return p
