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
import pickle
from pathlib import Path

import numpy as np
import torch

from vlp.errors import VLPError

FC7_FILES = ("fc7_w.pkl", "fc7_b.pkl")

# What a pickled numpy array refers to, over numpy 1.x and 2.x module names and pickle
# protocols 2 to 5; `_codecs.encode` turns the latin-1 text of protocol 2 back to bytes.
_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ARRAY_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which a numpy array never does")


def read_array_pickle(path: Path) -> np.ndarray:
    """A numpy array from a pickle file; anything but an array is refused unrun."""
    try:
        value = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
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
