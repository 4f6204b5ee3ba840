"""Saving and loading detectors: our directories, and torchvision state dicts."""

import numpy as np
import pytest
import torch

from feature_extraction import DetectorConfig, build_detector, load_detector, save_detector
from extract_fixtures import scene, tiny_detector
from vlp.errors import VLPError


def image(i=0):
    return torch.from_numpy(scene(i, 64, 48)[0]).permute(2, 0, 1).float() / 255


def same_detections(a, b):
    with torch.no_grad():
        (x,), (y,) = a([image()]), b([image()])
    assert set(x) == set(y) and len(x["boxes"]) > 0
    for k in x:
        torch.testing.assert_close(x[k], y[k])


def test_directory_round_trip(tmp_path):
    model, config = tiny_detector(seed=4)
    with torch.no_grad():  # give BatchNorm statistics that differ from the defaults
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    save_detector(model, config, tmp_path / "det")
    assert sorted(p.name for p in (tmp_path / "det").iterdir()) == \
        ["detector.json", "model.safetensors"]
    loaded, loaded_config = load_detector(tmp_path / "det")
    assert loaded_config == config
    same_detections(model, loaded)
    # Its weights file alone names the directory too.
    assert load_detector(tmp_path / "det" / "model.safetensors")[1] == config


def test_torchvision_state_dict_loads_and_detects_the_same(tmp_path):
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    reference = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=5,
                                        min_size=64, max_size=96).eval()
    with torch.no_grad():  # a box predictor that scores something above 0.05
        reference.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([0, 3, 0, 0, 0.]))
    torch.save(reference.state_dict(), tmp_path / "frcnn.pth")
    model, config = load_detector(tmp_path / "frcnn.pth", num_classes=5, min_size=64,
                                  max_size=96)
    assert (config.backbone, config.num_classes, config.representation_size) == \
        ("resnet50", 5, 1024)
    assert config.norm == "batch" and config.returned_layers == [1, 2, 3, 4]
    same_detections(reference, model)
    # torchvision's pretrained detectors freeze BatchNorm: their files have no counters.
    state = {k: v for k, v in reference.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "frozen.pth")
    frozen, config = load_detector(tmp_path / "frozen.pth", min_size=64, max_size=96)
    assert config.norm == "frozen"
    same_detections(reference, frozen)
    with pytest.raises(VLPError, match="--num-classes 91 but the weights .* have 5 classes"):
        load_detector(tmp_path / "frcnn.pth", num_classes=91)


def test_unusable_weights_are_refused_with_the_reason(tmp_path):
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(VLPError, match="cannot read .*notes.pth as a torch state dict"):
        load_detector(tmp_path / "notes.pth")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "classifier.pth")
    with pytest.raises(VLPError, match="not a torchvision Faster R-CNN"):
        load_detector(tmp_path / "classifier.pth")
    with pytest.raises(VLPError, match="no detector at"):
        load_detector(tmp_path / "nowhere")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(VLPError, match="not a detector directory"):
        load_detector(tmp_path / "empty_dir")
    # A state dict whose head does not fit the config it claims.
    model, config = tiny_detector()
    state = model.state_dict()
    state["roi_heads.extra.weight"] = torch.zeros(1)
    del state["rpn.head.conv.0.0.weight"]
    save_detector(build_detector(config), config, tmp_path / "det")
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state.items()},
              str(tmp_path / "det" / "model.safetensors"))
    with pytest.raises(VLPError, match="missing: rpn.head.conv.0.0.weight; "
                                       "unexpected: roi_heads.extra.weight"):
        load_detector(tmp_path / "det")


def test_config_checks():
    with pytest.raises(VLPError, match="backbone 'vgg16'"):
        DetectorConfig(backbone="vgg16")
    with pytest.raises(VLPError, match="3 anchor sizes for 5 FPN levels"):
        DetectorConfig(anchor_sizes=[1, 2, 3])
    assert DetectorConfig(num_classes=3).class_names == ["__background__", "class_1",
                                                          "class_2"]
    # The representation size is the region feature size.
    model = build_detector(DetectorConfig(backbone="resnet18", num_classes=3,
                                          representation_size=48, fpn_channels=8))
    assert model.roi_heads.box_head.fc7.out_features == 48
    assert np.prod(model.roi_heads.box_predictor.cls_score.weight.shape) == 3 * 48
