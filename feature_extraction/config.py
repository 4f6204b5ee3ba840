"""DetectorConfig: everything needed to rebuild a detector, saved as `detector.json`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from vlp.errors import VLPError

BACKBONES = ("resnet18", "resnet50")
NORMS = ("frozen", "batch")
CONFIG_NAME = "detector.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class DetectorConfig:
    """A torchvision Faster R-CNN with an FPN on a ResNet.

    The defaults are torchvision's `fasterrcnn_resnet50_fpn`, so its COCO weights load
    into `DetectorConfig()` unchanged. `num_classes` counts the background (index 0).
    `norm="frozen"` keeps BatchNorm statistics fixed (for weights trained elsewhere);
    `norm="batch"` trains them, which a detector trained from scratch needs.
    """

    backbone: str = "resnet50"
    num_classes: int = 91
    class_names: list[str] = field(default_factory=list)
    representation_size: int = 1024  # D, the width of the box head (TwoMLPHead)
    fpn_channels: int = 256
    returned_layers: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    anchor_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    min_size: int = 800
    max_size: int = 1333
    norm: str = "frozen"
    roi_sampling_ratio: int = 2
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise VLPError(f"backbone {self.backbone!r} is not supported "
                           f"(choose from {', '.join(BACKBONES)})")
        if self.norm not in NORMS:
            raise VLPError(f"norm {self.norm!r}: choose from {', '.join(NORMS)}")
        if self.num_classes < 2:
            raise VLPError(f"num_classes counts the background and must be at least 2, "
                           f"got {self.num_classes}")
        if not self.class_names:
            self.class_names = ["__background__"] + [
                f"class_{i}" for i in range(1, self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise VLPError(f"{len(self.class_names)} class names for {self.num_classes} "
                           "classes (the first name is the background)")
        levels = len(self.returned_layers) + 1  # FPN adds one max-pooled level
        if len(self.anchor_sizes) != levels:
            raise VLPError(f"{len(self.anchor_sizes)} anchor sizes for {levels} FPN levels "
                           f"(returned layers {self.returned_layers} + pool)")

    def save(self, directory: Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory: Path) -> "DetectorConfig":
        path = Path(directory) / CONFIG_NAME
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise VLPError(f"cannot read detector config {path}: {err}") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise VLPError(f"{path}: unknown fields {unknown}")
        return cls(**raw)


def toyworld_config(class_names: list[str], image_size: int) -> DetectorConfig:
    """A small, fast detector for ToyWorld's shapes (20-40 px on a 128 px image)."""
    return DetectorConfig(
        backbone="resnet18", num_classes=len(class_names), class_names=class_names,
        representation_size=256, fpn_channels=64, returned_layers=[1, 2, 3],
        anchor_sizes=[16, 32, 64, 128], aspect_ratios=[1.0],
        min_size=image_size, max_size=image_size, norm="batch", roi_sampling_ratio=1,
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=128, box_batch_size_per_image=64,
    )
