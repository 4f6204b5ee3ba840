"""Build, save and load the detector: torchvision's Faster R-CNN with a ResNet-FPN.

A saved detector is a directory with `detector.json` (DetectorConfig) and
`model.safetensors`. A plain torchvision Faster R-CNN state dict (`.pth`/`.pt`, e.g.
COCO weights downloaded by hand) loads too, read with `weights_only=True`; its class
count and box-head width are read from the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from feature_extraction.config import CONFIG_NAME, WEIGHTS_NAME, DetectorConfig
from vlp.errors import VLPError


def build_detector(config: DetectorConfig) -> nn.Module:
    """A randomly initialised detector (no weights are ever downloaded)."""
    from torchvision.models import resnet
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.misc import FrozenBatchNorm2d

    norm = FrozenBatchNorm2d if config.norm == "frozen" else nn.BatchNorm2d
    body = getattr(resnet, config.backbone)(weights=None, norm_layer=norm)
    stage_width = 64 if config.backbone == "resnet18" else 256  # output of layer1
    layers = config.returned_layers
    backbone = BackboneWithFPN(
        body, {f"layer{k}": str(i) for i, k in enumerate(layers)},
        [stage_width * 2 ** (k - 1) for k in layers], config.fpn_channels,
        norm_layer=None)
    levels = len(layers) + 1
    anchors = AnchorGenerator(tuple((s,) for s in config.anchor_sizes),
                              (tuple(config.aspect_ratios),) * levels)
    pool = MultiScaleRoIAlign([str(i) for i in range(len(layers))], 7,
                              config.roi_sampling_ratio)
    d = config.representation_size
    return FasterRCNN(
        backbone, num_classes=None, min_size=config.min_size, max_size=config.max_size,
        rpn_anchor_generator=anchors, box_roi_pool=pool,
        box_head=TwoMLPHead(config.fpn_channels * 7 * 7, d),
        box_predictor=FastRCNNPredictor(d, config.num_classes),
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=config.rpn_batch_size_per_image,
        box_batch_size_per_image=config.box_batch_size_per_image,
    )


def save_detector(model: nn.Module, config: DetectorConfig, directory) -> Path:
    """Write `detector.json` and `model.safetensors` into `directory` (each atomically)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(directory / WEIGHTS_NAME)
    config.save(directory)
    return directory


def load_detector(path, *, num_classes: int | None = None,
                  class_names: list[str] | None = None, min_size: int | None = None,
                  max_size: int | None = None) -> tuple[nn.Module, DetectorConfig]:
    """(model in eval mode, config) from a detector directory or a state dict file.

    For a state dict file, `num_classes` (background included) is checked against the
    weights; `class_names`, `min_size` and `max_size` fill the config. For a directory
    these override the saved sizes only.
    """
    path = Path(path)
    if path.is_file() and path.name == WEIGHTS_NAME and (path.parent / CONFIG_NAME).is_file():
        path = path.parent  # the weights file of a detector directory
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise VLPError(f"{path} is not a detector directory (no {CONFIG_NAME})")
        config = DetectorConfig.load(path)
        state = _read_safetensors(path / WEIGHTS_NAME)
    elif path.is_file():
        state = _read_safetensors(path) if path.suffix == ".safetensors" \
            else _read_state_dict(path)
        config = config_from_state_dict(state, path, num_classes, class_names)
    else:
        raise VLPError(f"no detector at {path} (expected a directory with {CONFIG_NAME} "
                       "or a .pth state dict file)")
    if min_size is not None:
        config.min_size = min_size
    if max_size is not None:
        config.max_size = max_size
    model = build_detector(config)
    load_weights(model, state, path)
    model.eval()
    return model, config


def _read_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    if not path.is_file():
        raise VLPError(f"detector weights {path} are missing")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise VLPError(f"cannot read detector weights {path}: {err}") from None


def _read_state_dict(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise VLPError(f"cannot read {path} as a torch state dict: {err}") from None
    for wrapper in ("model", "state_dict"):  # training scripts often nest it
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise VLPError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def config_from_state_dict(state: dict, path, num_classes=None,
                           class_names=None) -> DetectorConfig:
    """The config of a torchvision Faster R-CNN (ResNet-FPN) state dict."""
    key = "roi_heads.box_predictor.cls_score.weight"
    if key not in state or "roi_heads.box_head.fc6.weight" not in state:
        raise VLPError(f"{path} is not a torchvision Faster R-CNN FPN state dict "
                       f"(no {key}); the v2 model and other heads are not supported")
    found, d = state[key].shape
    if num_classes is not None and num_classes != found:
        raise VLPError(f"--num-classes {num_classes} but the weights in {path} have "
                       f"{found} classes (background included)")
    if class_names is not None and len(class_names) != found:
        raise VLPError(f"{len(class_names)} class names for the {found} classes in {path} "
                       "(the first name is the background)")
    backbone = "resnet50" if "backbone.body.layer1.0.conv3.weight" in state else "resnet18"
    layers = sorted({int(k.split(".")[3]) + 1 for k in state
                     if k.startswith("backbone.fpn.inner_blocks.")})
    fpn = state["backbone.fpn.layer_blocks.0.0.weight"].shape[0] \
        if "backbone.fpn.layer_blocks.0.0.weight" in state else 256
    layers = layers or [1, 2, 3, 4]
    # torchvision builds untrained backbones with BatchNorm, pretrained ones frozen.
    norm = "batch" if any(k.endswith("num_batches_tracked") for k in state) else "frozen"
    # Anchor shapes are not in the weights, only their count per location: torchvision's
    # sizes (32 px at stride 4, doubling per level) and ratios are assumed.
    per_location = state["rpn.head.cls_logits.weight"].shape[0] \
        if "rpn.head.cls_logits.weight" in state else 3
    ratios = {1: [1.0], 3: [0.5, 1.0, 2.0]}.get(int(per_location))
    if ratios is None:
        raise VLPError(f"{path}: {per_location} anchors per location; only torchvision's "
                       "3 aspect ratios (or 1) can be inferred, save a detector directory")
    sizes = [32 * 2 ** i for i in range(len(layers) + 1)]
    return DetectorConfig(backbone=backbone, num_classes=int(found),
                          class_names=list(class_names or []), representation_size=int(d),
                          fpn_channels=int(fpn), returned_layers=layers, norm=norm,
                          anchor_sizes=sizes, aspect_ratios=ratios)


def load_weights(model: nn.Module, state: dict, path) -> None:
    """Copy `state` into `model`, naming every missing, unexpected or misshapen key."""
    own = model.state_dict()
    # BatchNorm counts its batches, FrozenBatchNorm has no counter: either way is fine.
    counter = "num_batches_tracked"
    state = {k: v for k, v in state.items() if k in own or not k.endswith(counter)}
    missing = [k for k in own if k not in state and not k.endswith(counter)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} != {list(own[k].shape)}"
              for k in state if k in own and state[k].shape != own[k].shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected),
                         ("wrong shape", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise VLPError(f"weights in {path} do not fit the detector: {'; '.join(problems)}")
    model.load_state_dict(state, strict=False)
