"""Checkpoint directories: config.json + model.safetensors (+ tokenizer files), or
config.json + dcp/ where `vlp train --fsdp` wrote each rank's shards (vlp.model.dcp).

Weights are read from safetensors, or from a legacy pickle only through
torch.load(weights_only=True), which refuses any object that is not plain tensor data,
so a checkpoint can never run code while it loads.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vlp.errors import VLPError
from vlp.model import dcp
from vlp.model.config import VLPConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a pickled state dict loaded weights-only."""
    path = Path(path)
    if not path.is_file():
        raise VLPError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise VLPError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VLPError(f"{path}: refused to load; only plain tensors are read from pickled "
                       f"checkpoints, never code ({first})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VLPError(f"{path}: not a state dict (a mapping of names to tensors)")
    return dict(state)


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
              required: tuple[str, ...] = ("",)) -> None:
    """Copy `state` into `model`: every key must be the model's with the same shape, and
    every model key starting with one of `required` must be present."""
    own = model.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    if unexpected:
        raise VLPError(f"{source}: keys the model does not have: {_few(unexpected)}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise VLPError(f"{source}: {key} has shape {tuple(value.shape)}, the model's is "
                           f"{tuple(own[key].shape)}")
    missing = sorted(k for k in own if k not in state and k.startswith(required))
    if missing:
        raise VLPError(f"{source}: missing keys: {_few(missing)}")
    model.load_state_dict(state, strict=False)


def _few(keys: list[str], limit: int = 6) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def save_pretrained(model, directory: str | Path, tokenizer_dir: str | Path | None = None,
                    weights: bool = True) -> Path:
    """Write config.json and model.safetensors (and tokenizer files found in
    `tokenizer_dir`) into `directory`, replacing those files atomically. Without
    `weights`, all but model.safetensors (whose weights DCP shards hold instead)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".saving-") as tmp:
        model.config.save(Path(tmp) / CONFIG_NAME)
        if weights:
            state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            save_file(state, str(Path(tmp) / WEIGHTS_NAME), metadata={"format": "pt"})
        if tokenizer_dir is not None:
            for name in TOKENIZER_FILES:
                if (Path(tokenizer_dir) / name).is_file():
                    shutil.copyfile(Path(tokenizer_dir) / name, Path(tmp) / name)
        for name in os.listdir(tmp):
            os.replace(Path(tmp) / name, directory / name)
    return directory


def load_pretrained(cls, directory: str | Path, map_location="cpu"):
    """A model from a directory save_pretrained wrote; needs no other settings."""
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise VLPError(f"{directory}: no {CONFIG_NAME}; not a vlp checkpoint directory")
    config = VLPConfig.load(config_path)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        weights = directory / LEGACY_WEIGHTS_NAME
    if not weights.is_file() and dcp.is_dcp(directory):  # written by vlp train --fsdp
        return dcp.read_weights(cls(config), directory).to(map_location)
    if not weights.is_file():
        raise VLPError(f"{directory}: neither {WEIGHTS_NAME} nor {LEGACY_WEIGHTS_NAME}")
    state = read_state_dict(weights)
    model = cls(config)
    load_into(model, state, str(weights))
    return model.to(map_location)
