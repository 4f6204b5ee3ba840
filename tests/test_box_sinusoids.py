"""Box sine/cosine features: their values, the region slot's third term, and the flag."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_features_record import record
from train_fixtures import eval_vqa_argv, make_inputs, vqa_argv, vqa_files
from vlp.cli.eval_vqa import main as eval_main
from vlp.data.features import box_class_vector, box_sinusoids
from vlp.data.region_text import region_inputs
from vlp.errors import VLPError
from vlp.model import UnifiedVLP
from vlp.model.config import VLPConfig
from vlp.train.main import main as train_main


def test_sinusoids_match_hand_computed_values():
    out = box_sinusoids(record(), 2)
    assert out.shape == (2, 4 * 5) and out.dtype == np.float32
    # box 0 is (10, 5)-(30, 25) on a 100 x 50 image: centre (.2, .3), size (.2, .4).
    v = np.array([0.2, 0.3, 0.2, 0.4])
    angles = np.array([[np.pi * x, 2 * np.pi * x] for x in v]).ravel()
    np.testing.assert_allclose(out[0], np.concatenate([v, np.sin(angles), np.cos(angles)]),
                               atol=1e-6)
    # box 1 covers the image: centre (.5, .5), size (1, 1).
    np.testing.assert_allclose(out[1, :4], [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(out[1, 4:6], [np.sin(np.pi / 2), np.sin(np.pi)], atol=1e-6)
    np.testing.assert_array_equal(box_sinusoids(record(), 0), out[:, :4])


def test_lazy_sinusoids_use_box_class_vectors_image_size():
    rec = record(image_w=None, image_h=None)
    lazy = box_sinusoids(rec, 3, box_norm="lazy")
    np.testing.assert_allclose(lazy, box_sinusoids(record(), 3), atol=1e-4)
    with pytest.raises(ValueError, match="box_norm='lazy'"):
        box_sinusoids(rec, 3)


def test_region_inputs_append_the_sinusoids_only_when_asked():
    feats, plain = region_inputs(record(), 1)
    _, wide = region_inputs(record(), 1, box_frequencies=3)
    assert plain.shape == (1, 9) and wide.shape == (1, 9 + 28)
    np.testing.assert_array_equal(wide[:, :9], box_class_vector(record())[:1])
    np.testing.assert_array_equal(wide[:, 9:], box_sinusoids(record(), 3)[:1])


def tiny_config(**changes) -> VLPConfig:
    return VLPConfig(vocab_size=40, pad_token_id=0, cls_token_id=1, sep_token_id=2,
                     mask_token_id=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=48, max_position_embeddings=40, region_feature_dim=3,
                     region_hidden_size=3, region_classes=3, max_regions=4,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **changes)


def inputs(config: VLPConfig, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, config.vocab_size, (2, 5), generator=g)
    return dict(text_ids=ids, text_lengths=torch.tensor([5, 3]),
                region_features=torch.randn(2, 4, 3, generator=g),
                region_locations=torch.randn(2, 4, config.region_input_dim, generator=g),
                num_regions=torch.tensor([4, 2]))


def test_the_sinusoids_reach_the_region_slots_and_their_width_is_checked():
    torch.manual_seed(0)
    model = UnifiedVLP(tiny_config(region_box_frequencies=2)).eval()
    assert model.config.region_input_dim == 6 + 3 + 20
    x = inputs(model.config)
    base = model(**x)
    moved = {**x, "region_locations": x["region_locations"].clone()}
    moved["region_locations"][0, 0, 9:] += 1.0   # one region's sines only
    assert not torch.allclose(model(**moved)[0], base[0])
    torch.testing.assert_close(model(**moved)[1], base[1])
    narrow = {**x, "region_locations": x["region_locations"][..., :9]}
    with pytest.raises(VLPError, match=r"region_box_frequencies 2"):
        model(**narrow)


def test_grown_keeps_every_weight_and_adds_a_fresh_box_layer(tmp_path):
    torch.manual_seed(0)
    plain = UnifiedVLP(tiny_config()).eval()
    grown = plain.grown(region_box_frequencies=2).eval()
    old = plain.state_dict()
    new = grown.state_dict()
    assert sorted(set(new) - set(old)) == ["region.box.0.bias", "region.box.0.weight"]
    assert all(torch.equal(old[k], new[k]) for k in old)
    assert new["region.box.0.weight"].std() > 0
    # With the new layer silenced the grown model computes what the plain one did.
    with torch.no_grad():
        grown.region.box[0].weight.zero_()
        grown.region.box[0].bias.zero_()
    x = inputs(grown.config)
    torch.testing.assert_close(grown(**x), plain(**{**x, "region_locations": x["region_locations"][..., :9]}))
    grown.save_pretrained(tmp_path / "ckpt")
    back = UnifiedVLP.from_pretrained(tmp_path / "ckpt").eval()
    assert back.config.region_box_frequencies == 2
    torch.testing.assert_close(back(**x), grown(**x))


def test_config_rejects_a_bad_frequency_count():
    with pytest.raises(VLPError, match="region_box_frequencies must be between 0 and 16"):
        tiny_config(region_box_frequencies=17)


def test_the_flag_trains_evaluates_and_guards_its_checkpoint(tmp_path, capsys):
    inputs_ = make_inputs(tmp_path, images=12)
    files = vqa_files(tmp_path, inputs_["features"], 12)
    run = tmp_path / "run"
    assert train_main(vqa_argv(inputs_, files, run, "--box_frequencies", "3",
                               "--num_train_epochs", "1")) == 0
    config = json.loads((run / "model.1" / "config.json").read_text())
    assert config["region_box_frequencies"] == 3
    assert eval_main(eval_vqa_argv(inputs_, files, run / "model.1")) == 0
    assert json.loads((run / "model.1.train.vqa_metrics.json").read_text())["overall"] >= 0
    # Finetuning it on: the checkpoint's count is kept; another count is refused.
    again = vqa_argv(inputs_, files, tmp_path / "again", "--model_recover_path",
                     str(run / "model.1"), "--box_frequencies", "5", "--num_train_epochs", "1")
    capsys.readouterr()
    assert train_main(again) == 2
    assert "--box_frequencies 5" in capsys.readouterr().err
    # A checkpoint without them gets a fresh layer; everything else starts as saved.
    plain_run = tmp_path / "plain"
    assert train_main(vqa_argv(inputs_, files, plain_run, "--num_train_epochs", "1")) == 0
    grown_run = tmp_path / "grown"
    assert train_main(vqa_argv(inputs_, files, grown_run, "--model_recover_path",
                               str(plain_run / "model.1"), "--box_frequencies", "2",
                               "--num_train_epochs", "1")) == 0
    assert json.loads((grown_run / "model.1" / "config.json").read_text())[
        "region_box_frequencies"] == 2
