"""`extract_regions`: images in, one RegionRecord per image written to a region store.

DataLoader workers decode whole batches; the main thread runs the detector; a
background thread writes records and `<out>.errors.jsonl`. Batches are cut from the
full (sharded) image list before anything is skipped, so a resumed run feeds every
image to the detector with the same neighbours as an uninterrupted run, and the
store ends up the same.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import torch

from feature_extraction.images import DEFAULT_MAX_PIXELS, BadImage, ImageItem, decode_rgb
from feature_extraction.regions import RegionExtractor
from vlp.data.features import RecordError, create_store


@dataclass
class ExtractReport:
    out: str
    total: int = 0  # images in this run's list (after sharding)
    already: int = 0  # in the store before this run
    written: int = 0
    failed: Counter = field(default_factory=Counter)  # reason -> images
    seconds: float = 0.0
    errors_file: str = ""

    @property
    def images_per_s(self) -> float:
        return (self.written + sum(self.failed.values())) / max(self.seconds, 1e-9)

    @property
    def ok(self) -> bool:
        """False only when images were attempted and the store holds none: a resumed run
        whose good images were all stored before, and whose broken files fail again, has
        done its work (the summary names what it skipped)."""
        attempted = self.written + sum(self.failed.values())
        return attempted == 0 or self.written + self.already > 0

    def summary(self) -> str:
        failed = sum(self.failed.values())
        lines = [f"{self.out}: {self.written} written, {self.already} already there, "
                 f"{failed} skipped, of {self.total} images "
                 f"({self.seconds:.1f} s, {self.images_per_s:.1f} images/s)"]
        for reason, n in self.failed.most_common():
            lines.append(f"  {n:6d}  {reason}")
        if failed:
            lines.append(f"  reasons per image: {self.errors_file}")
        return "\n".join(lines)


@dataclass
class _Decoded:
    key: str
    path: str
    image: torch.Tensor | None  # float [3, H, W] in [0, 1]
    boxes: torch.Tensor | None
    error: str | None = None


class _BatchDecoder(torch.utils.data.Dataset):
    """Item i = batch i, decoded (runs in the DataLoader workers)."""

    def __init__(self, batches: list[list[ImageItem]], max_pixels: int, given_boxes: bool):
        self.batches = batches
        self.max_pixels = max_pixels
        self.given_boxes = given_boxes

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> list[_Decoded]:
        return [self._decode(item) for item in self.batches[i]]

    def _decode(self, item: ImageItem) -> _Decoded:
        boxes = None
        if self.given_boxes:
            if not item.boxes:
                return _Decoded(item.key, item.path, None, None, "no boxes in the COCO file")
            boxes = torch.tensor(item.boxes, dtype=torch.float32).reshape(-1, 4)
        try:
            array = decode_rgb(item.path, self.max_pixels)
        except BadImage as err:
            return _Decoded(item.key, item.path, None, None, str(err))
        image = torch.from_numpy(array).permute(2, 0, 1).float().div_(255)
        return _Decoded(item.key, item.path, image, boxes)


def _as_is(batch):
    return batch


def default_workers(device) -> int:
    """Decoding processes to use: none on the CPU, where they would take cores from the
    detector's threads (ratio 0.86 against 0.98 of the bare forward with 2 workers on 2
    cores, bench/extract.py); 4 for a GPU, at most one per core."""
    if torch.device(device).type == "cpu":
        return 0
    return min(4, os.cpu_count() or 1)


def errors_path(out) -> str:
    return os.fspath(out).rstrip("/\\") + ".errors.jsonl"


def extract_regions(items: list[ImageItem], extractor: RegionExtractor, out, *,
                    format: str | None = None, batch_size: int = 8,
                    workers: int | None = None,
                    given_boxes: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                    commit_every: int = 64, progress: bool = True) -> ExtractReport:
    """Write records for `items` into the store at `out`, resuming what is there.

    workers: DataLoader processes decoding images (None: `default_workers`)."""
    from tqdm import tqdm

    start = time.perf_counter()
    predictor = extractor.model.roi_heads.box_predictor
    report = ExtractReport(out=os.fspath(out), total=len(items), errors_file=errors_path(out))
    writer = create_store(out, format, batch_size=commit_every,
                          feature_dim=predictor.cls_score.in_features,
                          num_classes=predictor.cls_score.out_features)
    with writer:
        done = {it.key for it in items if writer.has(it.key)}
        report.already = len(done)
        batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        batches = [b for b in batches if any(it.key not in done for it in b)]
        loader = torch.utils.data.DataLoader(
            _BatchDecoder(batches, max_pixels, given_boxes), batch_size=None,
            collate_fn=_as_is,
            num_workers=default_workers(extractor.device) if workers is None else workers,
            pin_memory=extractor.device.type == "cuda")
        bar = tqdm(total=len(items) - len(done), unit="img", desc="extract",
                   disable=not progress, smoothing=0.1)
        with _BackgroundWriter(writer, report) as background:
            for decoded in loader:
                good = [d for d in decoded if d.error is None]
                records = extractor([d.image for d in good],
                                    [d.boxes for d in good] if given_boxes else None)
                todo = [d for d in decoded if d.key not in done]
                by_key = {d.key: r for d, r in zip(good, records)}
                background.send([(d.key, d.path, by_key.get(d.key), d.error) for d in todo])
                bar.update(len(todo))
        bar.close()
    report.seconds = time.perf_counter() - start
    return report


class _BackgroundWriter:
    """Puts records into the store and reasons into errors.jsonl, off the main thread."""

    def __init__(self, writer, report: ExtractReport):
        self.writer = writer
        self.report = report
        self.queue: queue.Queue = queue.Queue(maxsize=8)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="region-writer", daemon=True)

    def __enter__(self):
        # The errors file lists what the latest run skipped; a resumed run retries those.
        self.errors = open(self.report.errors_file, "w", encoding="utf-8")
        self.thread.start()
        return self

    def send(self, entries) -> None:
        if self.failure is not None:
            raise self.failure
        self.queue.put(entries)

    def __exit__(self, exc_type, exc, tb) -> None:
        self.queue.put(None)
        self.thread.join()
        self.errors.close()
        if self.failure is not None and exc_type is None:
            raise self.failure

    def _run(self) -> None:
        while (entries := self.queue.get()) is not None:
            if self.failure is not None:
                continue  # drain so the main thread never blocks
            try:
                for key, path, record, error in entries:
                    self._one(key, path, record, error)
                self.errors.flush()
            except BaseException as err:  # handed to the main thread
                self.failure = err

    def _one(self, key, path, record, error) -> None:
        if error is None:
            try:
                self.writer.put(key, record)
                self.report.written += 1
                return
            except RecordError as err:
                error = f"invalid record: {err}"
        self.report.failed[_reason_kind(error)] += 1
        self.errors.write(json.dumps({"image_id": key, "path": path, "reason": error}) + "\n")


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary (sizes and details vary per image)."""
    for marker in ("decompression-bomb", "too small", "invalid record", "cannot decode"):
        if marker in reason:
            return {"decompression-bomb": "over the decompression-bomb limit"}.get(marker,
                                                                                 marker)
    return reason
