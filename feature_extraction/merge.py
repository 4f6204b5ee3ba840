"""`merge_stores`: join shard stores (and their error lists) into one store."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from feature_extraction.extract import errors_path
from vlp.data.features import create_store, open_store
from vlp.errors import VLPError


@dataclass
class MergeReport:
    out: str
    copied: int = 0
    present: int = 0  # already in the output with equal values (a rerun, or a duplicate)
    inputs: int = 0

    def summary(self) -> str:
        return (f"{self.out}: {self.copied} records copied from {self.inputs} stores, "
                f"{self.present} already there")


def merge_stores(out, inputs: list, format: str | None = None,
                 progress: bool = True) -> MergeReport:
    """Copy every record of `inputs` into `out` (created or resumed). An id found twice
    must hold the same values; otherwise VLPError names it and both stores."""
    from tqdm import tqdm

    if not inputs:
        raise VLPError("give at least one store to merge")
    report = MergeReport(out=os.fspath(out), inputs=len(inputs))
    origin: dict[str, str] = {}
    with create_store(out, format) as writer:
        for path in inputs:
            if os.path.realpath(path) == os.path.realpath(out):
                raise VLPError(f"{path} is the output store; name it once, as OUT")
            with open_store(path) as store:
                for key in tqdm(store, desc=os.path.basename(os.fspath(path)),
                                unit="rec", disable=not progress):
                    record = store[key]
                    if key in origin:
                        _check_same(key, record, origin[key], path)
                    if key in origin or writer.has(key):
                        report.present += 1  # a resumed merge: copied by the last run
                        continue
                    writer.put(key, record)
                    origin[key] = os.fspath(path)
                    report.copied += 1
    _merge_errors(out, inputs)
    return report


def _check_same(key, record, first, second) -> None:
    with open_store(first) as store:
        held = store[key].stored()
    same = all(np.array_equal(getattr(held, f), getattr(record.stored(), f))
               for f in ("boxes", "features", "cls_probs", "scores"))
    if not same:
        raise VLPError(f"image {key!r} is in {first} and in {second} with different values")


def _merge_errors(out, inputs) -> None:
    """<out>.errors.jsonl = the inputs' lists joined, for ids not in the merged store."""
    lines = []
    for path in inputs:
        source = errors_path(path)
        if os.path.isfile(source):
            with open(source, encoding="utf-8") as f:
                lines.extend(line for line in f if line.strip())
    if lines:
        with open(errors_path(out), "w", encoding="utf-8") as f:
            f.writelines(lines)
