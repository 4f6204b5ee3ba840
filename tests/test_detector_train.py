"""train_detector on a tiny COCO set: checkpoints, metrics, exact resume, reuse."""

import json

import pytest
import torch
from safetensors.torch import load_file

import feature_extraction.train as train
from feature_extraction import load_detector
from extract_fixtures import tiny_config, write_coco


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    return write_coco(root / "instances.json", root / "images", 6), root / "images"


def options(coco, out, **kw):
    path, images = coco
    return train.TrainOptions(coco=str(path), images=str(images), out=str(out),
                              val_coco=str(path), config=tiny_config(4), max_steps=4,
                              batch_size=2, warmup_steps=2, workers=0, save_every=2,
                              progress=False, **kw)


def test_training_writes_a_loadable_detector_and_metrics(tmp_path, coco):
    metrics = train.train_detector(options(coco, tmp_path / "det"))
    assert metrics["steps"] == 4 and not metrics["reused"]
    for key in ("map", "map50", "recall50"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["images"] == 6
    saved = json.loads((tmp_path / "det" / "metrics.json").read_text())
    assert saved["finished"] and saved["map50"] == metrics["map50"]
    model, config = load_detector(tmp_path / "det")
    assert config.class_names == ["__background__", "red", "green", "blue"]
    assert not model.training
    # A finished directory is kept as it is.
    again = train.train_detector(options(coco, tmp_path / "det"))
    assert again["reused"] and again["map50"] == metrics["map50"]


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, coco, monkeypatch):
    train.train_detector(options(coco, tmp_path / "whole"))
    real_save = train._save

    def save_then_die(out, model, config, optimizer, scheduler, scaler, step, seconds):
        real_save(out, model, config, optimizer, scheduler, scaler, step, seconds)
        if step == 2:
            raise KeyboardInterrupt  # as if killed right after the checkpoint

    monkeypatch.setattr(train, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.train_detector(options(coco, tmp_path / "resumed"))
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    monkeypatch.setattr(train, "_save", real_save)
    resumed = train.train_detector(options(coco, tmp_path / "resumed"))
    assert resumed["steps"] == 4
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_train_detector_command(tmp_path, coco, capsys):
    from vlp.cli import train_detector
    from vlp.cli.args import ArgumentParser

    parser = ArgumentParser(prog="vlp")
    train_detector.register(parser.add_subparsers())
    path, images = coco
    argv = ["train-detector", "--coco", str(path), "--images", str(images),
            "--val-coco", str(path), "--out", str(tmp_path / "det"), "--backbone", "resnet18",
            "--representation-size", "32", "--fpn-channels", "16", "--min-size", "64",
            "--max-size", "64", "--max-steps", "2", "--batch-size", "2", "--workers", "0",
            "--quiet"]
    args = parser.parse_args(argv)
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "2 steps" in out and "mAP@0.5" in out and "recall@0.5" in out
    _, config = load_detector(tmp_path / "det")
    assert (config.backbone, config.representation_size, config.norm) == \
        ("resnet18", 32, "batch")
    args = parser.parse_args(argv)
    assert args.run(args) == 0
    assert "already trained, kept" in capsys.readouterr().out
