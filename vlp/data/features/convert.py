"""Copy region features from an existing release into an LMDB or HDF5 store."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from vlp.data.features.errors import MissingImageError, RecordError, StoreError
from vlp.data.features.writer import RegionWriter

SOURCE_FORMATS = ("vlp-h5", "butd-tsv", "npy-dir")


@dataclass
class Source:
    """(image id, thunk) pairs; calling the thunk reads that image's record."""

    items: Iterable[tuple[str, Callable]]
    total: int | None = None
    note: str = ""

    def __iter__(self) -> Iterator[tuple[str, Callable]]:
        return iter(self.items)


@dataclass
class ConvertReport:
    written: int = 0
    present: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)

    def summary(self, out) -> str:
        return (f"{out}: wrote {self.written} records, {self.present} already there, "
                f"{len(self.bad)} bad records skipped")


def open_source(kind: str, paths, *, bbox_file=None, tsv_fields=None) -> Source:
    """The records of an existing release, in the given format."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    if kind == "butd-tsv":
        from vlp.data.features.butd_tsv import parse_fields, read_butd_tsv
        fields = parse_fields(tsv_fields)
        note = ""
        if "objects_conf" not in fields or "cls_prob" not in fields:
            note = ("BUTD TSV rows without cls_prob get cls_probs of width 0 (C = 0); "
                    "rows without objects_conf get score 1 per box")
        return Source(read_butd_tsv(paths, fields), note=note)
    if kind not in ("vlp-h5", "npy-dir"):
        raise StoreError(f"unknown source format {kind!r} "
                         f"(choose from {', '.join(SOURCE_FORMATS)})")
    if len(paths) != 1:
        raise StoreError(f"--from {kind} reads one {'prefix' if kind == 'vlp-h5' else 'folder'}"
                         f", got {len(paths)} paths")
    from vlp.data.features.stores import open_store
    store = open_store(paths[0], kind, bbox_file=bbox_file, check_values=True)
    return Source(((key, lambda k=key: store[k]) for key in store), total=len(store))


def convert_features(source: Source, writer: RegionWriter, *, progress: bool = True,
                     limit: int | None = None, warn=None) -> ConvertReport:
    """Write every record of `source` that `writer` lacks; a bad record is named through
    `warn` (stderr by default) and skipped. Commits as it goes, so a rerun resumes."""
    from tqdm import tqdm

    warn = warn or (lambda message: tqdm.write(message, file=sys.stderr))
    report = ConvertReport()
    if source.note:
        warn(f"note: {source.note}")
    total = source.total if limit is None or source.total is None else min(limit, source.total)
    with tqdm(total=total, disable=not progress, unit="img", desc="convert",
              dynamic_ncols=True) as bar:
        for image_id, read in source:
            if limit is not None and report.written + report.present + len(report.bad) >= limit:
                break
            bar.update(1)
            if writer.has(image_id):
                report.present += 1
                continue
            try:
                writer.put(image_id, read())
            except (RecordError, MissingImageError) as err:
                report.bad.append((image_id, str(err)))
                warn(f"skipped {image_id}: {err}")
                continue
            report.written += 1
    writer.commit()
    return report
