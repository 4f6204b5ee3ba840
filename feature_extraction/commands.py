"""What `vlp extract` and `vlp train-detector` do once their flags are parsed."""

from __future__ import annotations

from pathlib import Path

from feature_extraction.extract import ExtractReport, extract_regions
from feature_extraction.images import (DEFAULT_MAX_PIXELS, from_coco, from_directory,
                                       from_list, parse_shard, shard)
from feature_extraction.regions import ExtractSettings, RegionExtractor
from vlp.errors import VLPError


def extract_images(*, detector, out, images=None, image_list=None, boxes=None,
                   key: str = "stem", format=None, min_boxes: int = 10,
                   max_boxes: int = 100, conf: float = 0.2, nms: float = 0.3,
                   agnostic_nms: float | None = None,
                   shard_spec: str | None = None, batch_size: int = 4,
                   workers: int | None = None,
                   device: str = "cpu", amp: bool = False, num_classes=None,
                   class_names_file=None, min_size=None, max_size=None,
                   max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True) -> ExtractReport:
    """Load the detector, list the images, extract (resuming) and report."""
    import torch

    from feature_extraction.detector import load_detector

    if min_boxes > max_boxes:
        raise VLPError(f"--min-boxes {min_boxes} is more than --max-boxes {max_boxes}")
    if boxes:
        if not images:
            raise VLPError("--boxes needs --images, the folder its file names are under")
        items = from_coco(boxes, images, key)
    elif images:
        items = from_directory(images)
    elif image_list:
        items = from_list(image_list)
    else:
        raise VLPError("give --images DIR or --image-list FILE")
    if shard_spec:
        items = shard(items, *parse_shard(shard_spec))
    names = _read_names(class_names_file) if class_names_file else None
    model, _ = load_detector(detector, num_classes=num_classes, class_names=names,
                             min_size=min_size, max_size=max_size)
    try:
        model.to(torch.device(device))
    except (RuntimeError, AssertionError) as err:
        raise VLPError(f"--device {device}: {err}") from None
    settings = ExtractSettings(conf=conf, nms_iou=nms, min_boxes=min_boxes,
                               max_boxes=max_boxes, agnostic_nms=agnostic_nms)
    return extract_regions(items, RegionExtractor(model, settings, amp=amp), out,
                           format=format, batch_size=batch_size, workers=workers,
                           given_boxes=bool(boxes), max_pixels=max_pixels, progress=progress)


def _read_names(path) -> list[str]:
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as err:
        raise VLPError(f"cannot read --class-names {path}: {err.strerror}") from None
