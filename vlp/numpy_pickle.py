"""Pickles read without running code: VLP's Detectron fc7 weights and Pythia's imdb files
are pickled numpy arrays, RefCOCO's refs files pickled plain data, and a downloaded pickle
may carry code."""

from __future__ import annotations

import pickle

# What a pickled numpy array (of numbers, or of plain Python values) refers to, under
# numpy 1.x and 2.x module names and pickle protocols 2 to 5; `_codecs.encode` turns the
# latin-1 text of protocol 2 back into bytes.
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class ArrayUnpickler(pickle.Unpickler):
    """Builds numpy arrays and the plain values inside them; any other global (a function
    to call, a class to build) is refused before anything runs. Python 2 pickles read
    with encoding latin1."""

    def __init__(self, file):
        super().__init__(file, encoding="latin1")

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a numpy array pickle")


# Plain data that pickle protocols 0-3 write through a global: sets and frozensets (Python 2
# names their module __builtin__) and, under protocol 2, Python 3 bytes.
_PLAIN = {("builtins", "set"), ("builtins", "frozenset"), ("__builtin__", "set"),
          ("__builtin__", "frozenset"), ("_codecs", "encode")}


class PlainUnpickler(pickle.Unpickler):
    """Builds dicts, lists, tuples, strings, bytes, numbers, bools, None, sets and frozensets;
    any other global is refused before anything runs. Python 2 pickles read with encoding
    utf-8, so their byte strings come back as text."""

    def __init__(self, file):
        super().__init__(file, encoding="utf-8")

    def find_class(self, module: str, name: str):
        if (module, name) in _PLAIN:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a plain-data pickle")
