"""Training checkpoints: the model directory plus everything needed to go on exactly.

    <output_dir>/model.<epoch>/   at the end of every epoch (VLP's model.<epoch>.bin)
    <output_dir>/step.<step>/     every --save_steps optimizer steps (the newest few kept)

Each holds config.json, model.safetensors and the tokenizer files (a model directory that
`UnifiedVLP.from_pretrained` and `vlp decode` read), `trainer_state.pt` (optimizer,
scheduler, scaler, every rank's RNG states) and `trainer_state.json` (step, epoch, data
position, the run's shape). A checkpoint is written to a temporary directory and renamed,
so one that exists is complete. `trainer_state.pt` is read with weights_only=True: plain
tensors and containers, never code.

A run continues only from its newest checkpoint, so once an epoch checkpoint is complete
the older ones keep only their weights (drop_resume_state), the step checkpoints it
supersedes go, and so do epoch checkpoints beyond the newest `keep_epochs` when that is set.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vlp.errors import VLPError
from vlp.model import dcp
from vlp.model.checkpoint import WEIGHTS_NAME

STATE_PT = "trainer_state.pt"
STATE_JSON = "trainer_state.json"
_NAME = re.compile(r"^(model|step)\.(\d+)$")
# Settings that must match for a checkpoint to continue this run.
RUN_SHAPE = ("world_size", "train_batch_size", "gradient_accumulation_steps", "fsdp",
             "task_batch_sizes")
# What a checkpoint from before a setting existed ran with.
SHAPE_DEFAULTS = {"fsdp": False, "task_batch_sizes": {}}


@dataclass
class Position:
    step: int = 0          # optimizer steps done
    epoch: int = 1         # the epoch in progress (1-based, as VLP counted)
    batches: int = 0       # micro-batches of this epoch already consumed (per rank)
    samples: int = 0       # examples seen, all ranks
    nonfinite_skipped: int = 0


def rng_state() -> dict:
    """This process's random states as tensors and plain values (weights_only-safe)."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        # Only this process's own GPU (the current device): a resumed rank may see another
        # set of GPUs, and its dropout stream must follow the rank, not a GPU index.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_python_state(state["python"]))
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if isinstance(cuda, (list, tuple)):  # every visible GPU's, as earlier versions saved
            cuda = cuda[torch.cuda.current_device() % len(cuda)]
        torch.cuda.set_rng_state(cuda)


def _as_python_state(value):
    # Lists come back where tuples went in; random.setstate wants tuples.
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


def staging(directory: Path) -> Path:
    """The temporary directory where every rank writes its shards of checkpoint
    `directory` (--fsdp) before the main rank completes and renames it."""
    return Path(directory).parent / f".tmp-{Path(directory).name}"


def save(directory: Path, model, tokenizer_dir, training: dict, position: Position,
         run_shape: dict, keep_steps: int = 2, extra_files=(), staged: bool = False,
         keep_epochs: int | None = None) -> Path:
    """Write checkpoint `directory` atomically (call on the main rank only), with copies
    of `extra_files` (a VQA answer vocabulary); then drop step checkpoints beyond the
    newest `keep_steps` and, after an epoch checkpoint, retire the older ones (see
    retire_older). `staged`: the ranks have already written the weights as DCP shards
    into staging(directory), which this completes."""
    directory = Path(directory)
    tmp = staging(directory) if staged else \
        directory.parent / f".tmp-{directory.name}-{os.getpid()}"
    if tmp.exists() and not staged:
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, tokenizer_dir, weights=not staged)
    for extra in extra_files:
        shutil.copyfile(extra, tmp / Path(extra).name)
    torch.save(training, tmp / STATE_PT)
    (tmp / STATE_JSON).write_text(json.dumps({**asdict(position), **run_shape}, indent=2) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    prune_steps(directory.parent, keep_steps)
    if directory.name.startswith("model."):
        retire_older(directory, position.step, keep_epochs)
    return directory


def retire_older(directory: Path, step: int, keep_epochs: int | None = None) -> None:
    """After epoch checkpoint `directory` (at optimizer step `step`) is complete, nothing
    older can be continued from: step checkpoints up to `step` are removed, older epoch
    checkpoints keep their weights without the resume state, and epoch checkpoints beyond
    the newest `keep_epochs` (None: all) are removed."""
    directory = Path(directory)
    epoch = int(_NAME.match(directory.name).group(2))
    older = []
    for p in directory.parent.iterdir():
        m = _NAME.match(p.name)
        if not m or not p.is_dir():
            continue
        if m.group(1) == "step" and int(m.group(2)) <= step:
            _remove(p)
        elif m.group(1) == "model" and int(m.group(2)) < epoch:
            older.append((int(m.group(2)), p))
    older.sort()
    removed = len(older) + 1 - keep_epochs if keep_epochs else 0
    for i, (_, p) in enumerate(older):
        if i < removed:
            _remove(p)
        else:
            drop_resume_state(p)


def _remove(path: Path) -> None:
    # Renamed first: a half-removed checkpoint would stop newest() from reading the run;
    # a .tmp-* directory left by a crash here goes at the next start (clean_partial).
    gone = path.parent / f".tmp-removed-{path.name}"
    shutil.rmtree(gone, ignore_errors=True)
    os.replace(path, gone)
    shutil.rmtree(gone, ignore_errors=True)


def drop_resume_state(directory: Path) -> None:
    """Keep checkpoint `directory` as weights only: remove trainer_state.pt (optimizer,
    scheduler, scaler, RNG states) and, where `vlp train --fsdp` wrote DCP shards (which
    hold the optimizer state too), gather the weights into model.safetensors first and
    then remove the shards. trainer_state.json stays (how far the run had come). What
    is left loads as weights (`from_pretrained`, --model_recover_path) and is no longer
    continued by a rerun. Repeating it after an interruption finishes the job."""
    directory = Path(directory)
    if dcp.is_dcp(directory) and not (directory / WEIGHTS_NAME).is_file():
        from vlp.model import UnifiedVLP

        UnifiedVLP.from_pretrained(directory).save_pretrained(directory)
    (directory / STATE_PT).unlink(missing_ok=True)
    shutil.rmtree(directory / dcp.DCP_DIR, ignore_errors=True)


def prune_steps(output_dir: Path, keep: int) -> None:
    steps = sorted((int(m.group(2)), p) for p in Path(output_dir).iterdir()
                   if (m := _NAME.match(p.name)) and m.group(1) == "step")
    for _, path in steps[:max(len(steps) - keep, 0)]:
        _remove(path)


def clean_partial(output_dir: Path) -> None:
    """Remove temporary directories that a killed run left behind."""
    for p in Path(output_dir).glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def read_position(directory: Path) -> tuple[Position, dict]:
    path = Path(directory) / STATE_JSON
    try:
        data = json.loads(path.read_text())
        shape = {k: data.pop(k, SHAPE_DEFAULTS.get(k)) for k in RUN_SHAPE}
        if None in shape.values():
            raise KeyError(next(k for k, v in shape.items() if v is None))
        return Position(**data), shape
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise VLPError(f"{path}: unreadable training checkpoint state ({type(err).__name__}: "
                       f"{err}); remove the checkpoint directory to start from an older one") from None


def newest(output_dir: Path) -> Path | None:
    """The checkpoint with the most optimizer steps in `output_dir`, or None."""
    best, best_key = None, None
    if not Path(output_dir).is_dir():
        return None
    for p in Path(output_dir).iterdir():
        m = _NAME.match(p.name)
        if not m or not p.is_dir():
            continue
        position, _ = read_position(p)
        key = (position.step, m.group(1) == "model")
        if best_key is None or key > best_key:
            best, best_key = p, key
    return best


def load_training(directory: Path) -> dict:
    path = Path(directory) / STATE_PT
    if not path.is_file():
        raise VLPError(f"{directory}: no {STATE_PT}, so the run cannot go on from it (a "
                       "checkpoint keeps it only while it is its run's newest); start from "
                       "its weights with --model_recover_path and another --output_dir")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise VLPError(f"{path}: corrupt or not a plain-tensor training state ({first})") from None


def check_shape(directory: Path, saved: dict, current: dict) -> None:
    diff = {k: (saved.get(k), current[k]) for k in current if saved.get(k) != current[k]}
    if diff:
        what = ", ".join(_setting(k, new, old) for k, (old, new) in diff.items())
        raise VLPError(f"{directory} belongs to a run with other settings: {what}; use "
                       "another --output_dir, or --model_recover_path to start from its weights")


def _setting(name: str, here, saved) -> str:
    if isinstance(here, bool):  # a switch: named with or without it
        return f"{'' if here else 'no '}--{name} (checkpoint: {'with' if saved else 'without'} it)"
    return f"--{name} {here} (checkpoint: {saved})"
