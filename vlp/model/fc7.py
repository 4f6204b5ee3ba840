"""Detectron's fc7 for the first region layer, as VLP started it.

VLP's region features are the BUTD detector's fc6 outputs, and VLP copied that
detector's fc7 into the first layer of its region MLP (`vis_embed.0`), from
`detectron_weights/fc7_w.pkl` ([out, in], the same layout as torch's Linear) and
`fc7_b.pkl`. Those files are pickled numpy arrays; they are read here with an unpickler
that builds numpy arrays and nothing else, so a file with code in it is refused without
running it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from vlp.errors import VLPError
from vlp.numpy_pickle import ArrayUnpickler

FC7_FILES = ("fc7_w.pkl", "fc7_b.pkl")


def read_array_pickle(path: Path) -> np.ndarray:
    """A numpy array from a pickle file; anything but an array is refused unrun."""
    try:
        value = ArrayUnpickler(io.BytesIO(path.read_bytes())).load()
    except OSError as err:
        raise VLPError(f"cannot read {path}: {err.strerror}") from None
    except Exception as err:  # unpickling fails in many types
        raise VLPError(f"{path} is not a pickled numpy array: {err}") from None
    if not isinstance(value, np.ndarray):
        raise VLPError(f"{path} holds a {type(value).__name__}, not a numpy array")
    if value.dtype.kind not in "fiu":
        raise VLPError(f"{path} holds an array of {value.dtype}, not of numbers")
    return value


def read_detectron_fc7(directory: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [out, in], bias [out]) from VLP's `detectron_weights` directory."""
    directory = Path(directory)
    missing = [name for name in FC7_FILES if not (directory / name).is_file()]
    if missing:
        raise VLPError(f"--region_fc7 {directory}: no {' or '.join(missing)} there (VLP's "
                       "detectron_weights directory holds fc7_w.pkl and fc7_b.pkl)")
    weight, bias = (torch.from_numpy(read_array_pickle(directory / name).astype(np.float32))
                    for name in FC7_FILES)
    if weight.dim() != 2 or bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
        raise VLPError(f"--region_fc7 {directory}: fc7_w {tuple(weight.shape)} and fc7_b "
                       f"{tuple(bias.shape)} are not a layer's [out, in] weight and [out] bias")
    return weight, bias
