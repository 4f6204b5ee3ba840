"""`vlp convert-checkpoint`: a Hugging Face BERT, VLP's model.N.bin or the DCP shards of a
`vlp train --fsdp` checkpoint into a vlp checkpoint (config.json + model.safetensors)."""

from __future__ import annotations

from vlp.cli.args import add_command, int_at_least


def register(subparsers) -> None:
    p = add_command(
        subparsers, "convert-checkpoint", run,
        help="convert a Hugging Face BERT directory, VLP's model.N.bin or a --fsdp "
             "checkpoint's DCP shards into a vlp checkpoint directory (config.json + "
             "model.safetensors)",
    )
    p.add_argument("path", metavar="PATH",
                   help="BERT directory (hf-bert), model.N.bin file (vlp-bin) or a "
                   "checkpoint directory written by vlp train --fsdp (dcp)")
    p.add_argument("--from", dest="source", required=True, choices=("vlp-bin", "hf-bert", "dcp"),
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
    if args.source == "dcp":
        return _from_dcp(Path(args.path), out)
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


def _from_dcp(path, out) -> int:
    """Gather the shards of every rank into one model directory (any number of ranks
    wrote them; this process reads them alone)."""
    from vlp.errors import VLPError
    from vlp.model import dcp
    from vlp.model.checkpoint import save_pretrained
    from vlp.model.unified import UnifiedVLP

    if not dcp.is_dcp(path) and (path / "model.safetensors").is_file():
        # An older epoch of an --fsdp run: its shards were gathered once a newer one existed.
        raise VLPError(f"{path}: no {dcp.DCP_DIR}/ shards, its weights are in model.safetensors "
                       "already; use the directory as it is")
    if not dcp.is_dcp(path):
        raise VLPError(f"{path}: no {dcp.DCP_DIR}/{dcp.METADATA}; not a checkpoint written "
                       "by vlp train --fsdp")
    model = UnifiedVLP.from_pretrained(path)
    save_pretrained(model, out, tokenizer_dir=path)
    for extra in sorted(path.glob("*.txt")) + sorted(path.glob("*.json")):
        # The VQA answer list and the like travel with the weights.
        if not (out / extra.name).exists() and not extra.name.startswith("trainer_state"):
            (out / extra.name).write_bytes(extra.read_bytes())
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {n:,} parameters gathered from {path / dcp.DCP_DIR}")
    return 0
