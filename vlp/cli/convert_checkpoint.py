"""`vlp convert-checkpoint`: a Hugging Face BERT or VLP's model.N.bin into a vlp checkpoint."""

from __future__ import annotations

from vlp.cli.args import add_command, int_at_least


def register(subparsers) -> None:
    p = add_command(
        subparsers, "convert-checkpoint", run,
        help="convert a Hugging Face BERT directory or VLP's model.N.bin into a vlp "
             "checkpoint directory (config.json + model.safetensors)",
    )
    p.add_argument("path", metavar="PATH",
                   help="BERT directory (hf-bert) or model.N.bin file (vlp-bin)")
    p.add_argument("--from", dest="source", required=True, choices=("vlp-bin", "hf-bert"),
                   help="format of PATH")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="copy vocab/tokenizer files from DIR (default for hf-bert: PATH)")
    p.add_argument("--num-heads", type=int_at_least(1),
                   help="attention heads (vlp-bin files do not store it; default hidden/64)")
    p.add_argument("--type-vocab-size", type=int, choices=(2, 6),
                   help="segment types (default: hf-bert 6, VLP's new segment ids; "
                        "vlp-bin: as stored)")
    p.add_argument("--max-regions", type=int_at_least(1), default=100,
                   help="most regions per image the model accepts")
    p.add_argument("--region-feature-dim", type=int_at_least(1),
                   help="hf-bert only: region feature size D (default 2048)")
    p.add_argument("--region-classes", type=int_at_least(0),
                   help="hf-bert only: detector classes C, background included (default 1601)")
    p.add_argument("--overwrite", action="store_true", help="replace files in an existing --out")


def run(args) -> int:
    from pathlib import Path

    from vlp.errors import VLPError
    from vlp.model.checkpoint import save_pretrained
    from vlp.model.convert import from_hf_bert, from_vlp_bin, special_token_ids
    from vlp.model.unified import UnifiedVLP

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise VLPError(f"--out {out} exists and is not empty (use --overwrite)")
    overrides = {"max_regions": args.max_regions}
    if args.num_heads:
        overrides["num_attention_heads"] = args.num_heads
    if args.type_vocab_size:
        overrides["type_vocab_size"] = args.type_vocab_size
    if args.source == "hf-bert":
        if args.region_feature_dim:
            overrides.update(region_feature_dim=args.region_feature_dim,
                             region_hidden_size=args.region_feature_dim)
        if args.region_classes is not None:
            overrides["region_classes"] = args.region_classes
        model = from_hf_bert(UnifiedVLP, args.path, **overrides)
        tokenizer = args.tokenizer or args.path
    else:
        if args.region_feature_dim or args.region_classes is not None:
            raise VLPError("--region-feature-dim/--region-classes apply to --from hf-bert; "
                           "a vlp-bin file carries its own")
        if args.tokenizer:
            overrides.update(special_token_ids(Path(args.tokenizer) / "vocab.txt"))
        model = from_vlp_bin(UnifiedVLP, args.path, **overrides)
        tokenizer = args.tokenizer
    save_pretrained(model, out, tokenizer_dir=tokenizer)
    c = model.config
    print(f"wrote {out}: {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
          f"{c.type_vocab_size} segment types, regions {c.region_feature_dim}-d with "
          f"{c.region_classes} classes, VQA answers {c.vqa_answers}")
    return 0
