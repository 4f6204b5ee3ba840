"""What a `--model_recover_path` names, and the model it holds.

VLP's command lines chain runs by file name: each names the previous run's
`<output_dir>/model.N.bin`. A vlp run writes that checkpoint as the directory
`<output_dir>/model.N/`, so `.../model.N.bin` resolves to it when no such file exists
(one copy on disk, VLP's names on the command line).

Three kinds of weights load:
  - a vlp checkpoint directory (config.json says everything);
  - VLP's `model.N.bin` (region layers included); its attention heads, activation and
    special token ids are not stored in it and come from `--bert_model`'s directory, as
    VLP built the model from that directory's config before loading the file;
  - a BERT-layout `.bin` (UniLM's `model_153999_cpu.bin`, where VLP's pretraining
    starts: `bert.*` and `cls.*` keys, no region layers), its sizes also from
    `--bert_model`; the region layers start new.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

from vlp.errors import VLPError
from vlp.model.config import ARCHITECTURE


def is_model_dir(path: Path) -> bool:
    """A vlp checkpoint directory (its config.json names our architecture)."""
    try:
        return json.loads((path / "config.json").read_text()).get("architecture") == ARCHITECTURE
    except (OSError, ValueError, AttributeError):
        return False


def resolve(path: str | Path) -> Path:
    """`path`, or the `model.N/` directory a vlp run wrote for VLP's `model.N.bin` name."""
    path = Path(path)
    if not path.exists() and path.suffix == ".bin" and is_model_dir(path.with_suffix("")):
        return path.with_suffix("")
    return path


def expand(pattern: str, flag: str = "--model_recover_path") -> list[Path]:
    """Every checkpoint a glob names; `*.bin` patterns also match the `model.N/`
    directories vlp runs wrote under those names."""
    pattern = pattern.strip()
    found = {Path(p) for p in glob.glob(pattern)}
    if pattern.endswith(".bin"):
        found |= {Path(p) for p in glob.glob(pattern[:-len(".bin")]) if is_model_dir(Path(p))}
    found = {resolve(p) for p in found}
    if not found:
        raise VLPError(f"{flag} {pattern}: no checkpoint matches")
    return sorted(found)


def is_vlp_bin(state: dict) -> bool:
    """VLP's model.N.bin holds region layers; a BERT/UniLM .bin does not."""
    return any(k.removeprefix("module.").startswith("vis_embed.") for k in state)


def load(path: str | Path, bert_dir: str | Path | None = None, **overrides):
    """The UnifiedVLP a checkpoint holds (see the module docstring). `bert_dir` gives a
    `.bin` what the file does not store; `overrides` set config fields of a model built
    from BERT-layout weights (the region sizes, at least)."""
    return load_with_kind(path, bert_dir, **overrides)[0]


def load_with_kind(path: str | Path, bert_dir: str | Path | None = None, **overrides):
    """(model, kind): kind is "vlp" (a vlp checkpoint), "vlp-bin" (VLP's model.N.bin) or
    "bert" (a BERT directory or BERT-layout .bin: the region layers are new). An override
    `config_file` (VLP's --config_path) replaces `bert_dir`'s config.json."""
    from vlp.model import UnifiedVLP
    from vlp.model.checkpoint import read_state_dict
    from vlp.model.convert import bert_dir_settings, from_bert_state, from_vlp_state

    path = resolve(path)
    if path.is_dir():
        if is_model_dir(path):
            return UnifiedVLP.from_pretrained(path), "vlp"
        return UnifiedVLP.from_pretrained_bert(path, **overrides), "bert"
    state = read_state_dict(path)
    if is_vlp_bin(state):
        settings = bert_dir_settings(Path(bert_dir) if bert_dir else None,
                                     overrides.get("config_file"))
        try:
            return from_vlp_state(UnifiedVLP, state, str(path), **settings), "vlp-bin"
        except VLPError as err:
            if bert_dir is not None:
                raise
            raise VLPError(f"{path}: VLP's .bin stores no attention heads or special token "
                           f"ids; pass --bert_model, the BERT directory it was trained from "
                           f"({err})") from None
    if bert_dir is None:
        raise VLPError(f"{path}: BERT-layout weights (no region layers) need --bert_model, "
                       "the BERT directory whose config.json gives their sizes")
    return from_bert_state(UnifiedVLP, state, str(path), Path(bert_dir), **overrides), "bert"


def checkpoint_name(path: Path) -> str:
    """What output files are named after: `model.3` for `model.3/` and `model.3.bin`."""
    return path.name.removesuffix(".bin")
