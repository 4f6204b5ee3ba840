"""VLP's flags that reshape the model being trained: --config_path,
--max_position_embeddings, --relax_projection and the pooler --vis_mask_prob needs.

VLP applied them in `from_pretrained`, to whatever it started from (BERT, its own
model.N.bin, a recovered run): the config came from --config_path (else --bert_model's),
the position table was cut or grown by repeating it, and the masked-LM head's projections
were copied or cut to the run's task index. The same happens here after loading.
"""

from __future__ import annotations

from pathlib import Path

from vlp.errors import VLPError
from vlp.model import UnifiedVLP
from vlp.model.config import RELAX_TASK_INDEX
from vlp.model.convert import (check_config_file, fit_positions, fit_relax_projection,
                               hf_bert_config, read_config_file)

# VLP's --relax_projection built its head with 4 projections.
RELAX_PROJECTIONS = 4


def bert_overrides(args) -> dict:
    """Config fields for a model built from BERT weights or from scratch."""
    values = {"pooler": True} if args.vis_mask_prob > 0 else {}
    if args.max_position_embeddings:
        values["max_position_embeddings"] = args.max_position_embeddings
    if args.config_path:
        values["config_file"] = Path(args.config_path)
    return values


def scratch_config(args, from_bert: dict):
    """--from_scratch: every weight random, sizes from --config_path or --bert_model (a
    relaxed head starts as P independent projections, as VLP's did)."""
    values = {k: v for k, v in from_bert.items() if k != "config_file"}
    values["relax_projection"] = relax_projections(args)
    return hf_bert_config(Path(args.bert_model), values,
                          Path(args.config_path) if args.config_path else None)


def position_rows(args, config) -> int:
    """The position table for this run: --max_position_embeddings, else --config_path's
    (VLP sized every model by its config), else the starting model's."""
    if args.max_position_embeddings:
        return args.max_position_embeddings
    return int(config_value(args, "max_position_embeddings") or config.max_position_embeddings)


def relax_projections(args) -> int:
    """The head's projections for this run: 4 with --relax_projection, else what
    --config_path says (VLP read relax_projection from the config), else one; SCST used
    VLP's decoder, built with one, whatever the flag."""
    if args.scst:
        return 0
    if args.relax_projection:
        return RELAX_PROJECTIONS
    return int(config_value(args, "relax_projection") or 0)


def config_value(args, name: str):
    """`name` in the --config_path JSON (None without one, or when it has none)."""
    if not args.config_path:
        return None
    return read_config_file(Path(args.config_path)).get(name)


def apply_model_flags(model: UnifiedVLP, args, resume_dir: Path | None, source) -> UnifiedVLP:
    """`model` reshaped by the flags; a resumed run must keep the shapes it was saved with."""
    if args.config_path:
        check_config_file(model.config, Path(args.config_path),
                          source if source is not None else "the model")
    want = {"max_position_embeddings": position_rows(args, model.config),
            "relax_projection": relax_projections(args),
            "pooler": model.config.pooler or args.vis_mask_prob > 0}
    have = {name: getattr(model.config, name) for name in want}
    have["relax_projection"] = max(have["relax_projection"], 1)
    want["relax_projection"] = max(want["relax_projection"], 1)
    if have == want:
        return model
    if resume_dir is not None:
        changed = ", ".join(f"{k} {have[k]} -> {want[k]}" for k in want if have[k] != want[k])
        raise VLPError(f"{resume_dir} was saved with other model flags ({changed}); resume "
                       "with the run's own flags, or start from its weights with "
                       "--model_recover_path and another --output_dir")
    model = with_positions(model, want["max_position_embeddings"])
    task_idx = RELAX_TASK_INDEX["s2s" if "img2txt" in args.tasks.split(",") else "bi"]
    model = fit_relax_projection(model, relax_projections(args), task_idx)
    if want["pooler"] and model.pooler is None:
        model = model.grown(pooler=True)
    return model


def with_positions(model: UnifiedVLP, rows: int) -> UnifiedVLP:
    """`model` with a position table of `rows`, cut or grown by repetition (VLP)."""
    if rows == model.config.max_position_embeddings:
        return model
    state = model.state_dict()
    key = "embeddings.position_embeddings.weight"
    state[key] = fit_positions(state[key], rows)
    resized = UnifiedVLP(model.config.replace(max_position_embeddings=rows))
    resized.load_state_dict(state)
    return resized.to(next(model.parameters()).device)
