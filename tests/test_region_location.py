"""--region_location normed: a box embedding normalised on its own beside the region's
feature, its data columns, its checkpoints and the guard on changing it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_box_sinusoids import inputs, tiny_config
from test_features_record import record
from train_fixtures import eval_vqa_argv, make_inputs, vqa_argv, vqa_files
from vlp.cli.eval_vqa import main as eval_main
from vlp.data.features import box_class_vector
from vlp.data.region_text import region_inputs
from vlp.errors import VLPError
from vlp.model import UnifiedVLP
from vlp.train.main import main as train_main


def test_the_data_appends_the_box_centre_and_size_at_zero_octaves():
    config = tiny_config(region_location="normed")
    assert config.region_box_octaves == 0 and config.region_input_dim == 9 + 4
    assert tiny_config().region_box_octaves is None
    _, locations = region_inputs(record(), 2, box_frequencies=config.region_box_octaves)
    np.testing.assert_array_equal(locations[:, :9], box_class_vector(record())[:2])
    # Box 1 covers the image: centre (.5, .5), size (1, 1).
    np.testing.assert_allclose(locations[1, 9:], [0.5, 0.5, 1.0, 1.0])


def test_the_slot_is_the_sum_of_two_layer_norms():
    torch.manual_seed(0)
    model = UnifiedVLP(tiny_config(region_location="normed")).eval()
    region = model.region
    feats = torch.randn(2, 4, 3)
    locs = torch.randn(2, 4, model.config.region_input_dim)
    # Written out from the description: LN(ReLU(MLP(f)) + ReLU(W_l loc)) + LN(W_b box).
    w = region.feature
    what = F.relu(w[2](F.relu(w[0](feats))))
    located = F.relu(region.location[0](locs[..., :9]))
    eps = model.config.layer_norm_eps
    expected = (F.layer_norm(what + located, (32,), region.what_norm.weight,
                             region.what_norm.bias, eps)
                + F.layer_norm(region.box[0](locs[..., 9:]), (32,), region.box[1].weight,
                               region.box[1].bias, eps))
    torch.testing.assert_close(region(feats, locs), expected)
    # Each term has unit variance per slot: the box weighs as much as what the region shows.
    what_part, where_part = region.parts(feats, locs)
    for part in (what_part, where_part):
        torch.testing.assert_close(part.var(-1, unbiased=False), torch.ones(2, 4), atol=1e-3,
                                   rtol=0)


def test_moving_a_box_changes_only_its_own_image():
    torch.manual_seed(0)
    model = UnifiedVLP(tiny_config(region_location="normed")).eval()
    x = inputs(model.config)
    base = model(**x)
    moved = {**x, "region_locations": x["region_locations"].clone()}
    moved["region_locations"][0, 0, 9] += 0.5       # region 0 of image 0 moves right
    out = model(**moved)
    assert not torch.allclose(out[0], base[0])
    torch.testing.assert_close(out[1], base[1])


def test_grown_from_vlps_input_keeps_every_weight_and_round_trips(tmp_path):
    torch.manual_seed(0)
    plain = UnifiedVLP(tiny_config()).eval()
    grown = plain.grown(region_location="normed").eval()
    old, new = plain.state_dict(), grown.state_dict()
    assert sorted(set(new) - set(old)) == [
        "region.box.0.bias", "region.box.0.weight", "region.box.1.bias", "region.box.1.weight",
        "region.what_norm.bias", "region.what_norm.weight"]
    assert all(torch.equal(old[k], new[k]) for k in old)
    grown.save_pretrained(tmp_path / "ckpt")
    back = UnifiedVLP.from_pretrained(tmp_path / "ckpt").eval()
    assert back.config.region_location == "normed"
    x = inputs(grown.config)
    torch.testing.assert_close(back(**x), grown(**x))


def test_config_rejects_an_unknown_region_location():
    with pytest.raises(VLPError, match="region_location 'uniter' is not one of vlp, normed"):
        tiny_config(region_location="uniter")


def test_the_flag_trains_resumes_evaluates_and_guards_its_checkpoint(tmp_path, capsys):
    inputs_ = make_inputs(tmp_path, images=12)
    files = vqa_files(tmp_path, inputs_["features"], 12)
    run = tmp_path / "run"
    assert train_main(vqa_argv(inputs_, files, run, "--region_location", "normed",
                               "--num_train_epochs", "1")) == 0
    config = json.loads((run / "model.1" / "config.json").read_text())
    assert config["region_location"] == "normed" and config["region_box_frequencies"] == 0
    # The run goes on from its checkpoint with the same input, flag given or not.
    assert train_main(vqa_argv(inputs_, files, run, "--num_train_epochs", "2")) == 0
    assert json.loads((run / "model.2" / "config.json").read_text())["region_location"] == "normed"
    assert eval_main(eval_vqa_argv(inputs_, files, run / "model.2")) == 0
    assert json.loads((run / "model.2.train.vqa_metrics.json").read_text())["overall"] >= 0
    # Finetuning it back to VLP's input would drop its box layer: refused, in one line.
    capsys.readouterr()
    assert train_main(vqa_argv(inputs_, files, tmp_path / "back", "--model_recover_path",
                               str(run / "model.2"), "--region_location", "vlp",
                               "--num_train_epochs", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--region_location vlp" in err[0] and "model.2" in err[0]
