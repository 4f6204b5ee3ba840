"""The region MLP's width and VLP's start of its first layer from Detectron's fc7 pickles."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from train_fixtures import FEATURE_DIM, make_inputs, train_argv
from vlp.errors import VLPError
from vlp.model import UnifiedVLP, VLPConfig
from vlp.model.fc7 import read_detectron_fc7
from vlp.train.main import main


def test_the_region_mlp_is_d_to_d_to_h_unless_told_otherwise():
    small = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=24, max_position_embeddings=32, region_classes=3,
                 max_regions=4, cls_token_id=1, sep_token_id=2, mask_token_id=3)
    feature = UnifiedVLP(VLPConfig(region_feature_dim=12, **small)).region.feature
    assert feature[0].weight.shape == (12, 12) and feature[2].weight.shape == (16, 12)
    wide = UnifiedVLP(VLPConfig(region_feature_dim=12, region_hidden_size=20, **small))
    assert wide.region.feature[0].weight.shape == (20, 12)
    assert VLPConfig(region_feature_dim=12, **small).to_dict()["region_hidden_size"] == 12


def write_fc7(directory, weight: np.ndarray, bias: np.ndarray, protocol: int):
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in (("fc7_w.pkl", weight), ("fc7_b.pkl", bias)):
        with open(directory / name, "wb") as f:
            pickle.dump(value, f, protocol=protocol)
    return directory


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_detectron_pickles_are_read_as_arrays(tmp_path, protocol):
    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal(5)
    w, b = read_detectron_fc7(write_fc7(tmp_path / "detectron_weights", weight, bias, protocol))
    assert torch.equal(w, torch.from_numpy(weight))
    assert b.dtype == torch.float32 and torch.allclose(b, torch.from_numpy(bias).float())


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_with_code_in_it_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights = write_fc7(tmp_path / "w", np.zeros((2, 2), np.float32), np.zeros(2), 4)
    with open(weights / "fc7_w.pkl", "wb") as f:
        pickle.dump(_Exploit(), f, protocol=4)
    with pytest.raises(VLPError, match=r"fc7_w\.pkl is not a pickled numpy array: .*posix\.system"):
        read_detectron_fc7(weights)
    assert not (tmp_path / "pwned").exists()


def test_bad_fc7_directories_name_the_file(tmp_path):
    with pytest.raises(VLPError, match=r"--region_fc7 .*: no fc7_w\.pkl or fc7_b\.pkl there"):
        read_detectron_fc7(tmp_path)
    write_fc7(tmp_path, np.zeros((2, 3), np.float32), np.zeros(3), 4)
    with pytest.raises(VLPError, match=r"fc7_w \(2, 3\) and fc7_b \(3,\)"):
        read_detectron_fc7(tmp_path)
    with open(tmp_path / "fc7_b.pkl", "wb") as f:
        pickle.dump({"bias": [0.0]}, f)
    with pytest.raises(VLPError, match=r"fc7_b\.pkl holds a dict, not a numpy array"):
        read_detectron_fc7(tmp_path)
    with open(tmp_path / "fc7_b.pkl", "wb") as f:
        pickle.dump(np.array([{"bias": 0.0}], dtype=object), f)
    with pytest.raises(VLPError, match=r"fc7_b\.pkl holds an array of object, not of numbers"):
        read_detectron_fc7(tmp_path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"), images=8)


def first_region_layer(run):
    model = UnifiedVLP.from_pretrained(run)
    return model.region.feature[0].weight.detach(), model.region.feature[0].bias.detach()


def test_training_from_bert_starts_the_region_layer_from_fc7(inputs, tmp_path):
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((FEATURE_DIM, FEATURE_DIM)).astype(np.float32)
    bias = rng.standard_normal(FEATURE_DIM).astype(np.float32)
    fc7 = write_fc7(tmp_path / "detectron_weights", weight, bias, 2)
    # A learning rate of 0 keeps the first step's weights: the checkpoint shows the start.
    argv = ["--num_train_epochs", "1", "--learning_rate", "0", "--region_fc7", str(fc7)]
    assert main(train_argv(inputs, tmp_path / "run", *argv)) == 0
    w, b = first_region_layer(tmp_path / "run" / "model.1")
    assert torch.equal(w, torch.from_numpy(weight)) and torch.equal(b, torch.from_numpy(bias))
    # Finetuning from that checkpoint keeps its trained region layer, as VLP's did.
    other = write_fc7(tmp_path / "other", weight + 1, bias + 1, 2)
    argv = ["--num_train_epochs", "1", "--learning_rate", "0", "--region_fc7", str(other),
            "--model_recover_path", str(tmp_path / "run" / "model.1")]
    assert main(train_argv(inputs, tmp_path / "finetune", *argv)) == 0
    assert torch.equal(first_region_layer(tmp_path / "finetune" / "model.1")[0], w)
    saved = json.loads((tmp_path / "finetune" / "model.1" / "config.json").read_text())
    assert saved["region_hidden_size"] == FEATURE_DIM


def test_an_fc7_of_another_size_is_one_line_naming_the_flag(inputs, tmp_path, capsys):
    fc7 = write_fc7(tmp_path / "detectron_weights", np.zeros((4, 4), np.float32),
                    np.zeros(4, np.float32), 2)
    argv = ["--num_train_epochs", "1", "--region_fc7", str(fc7)]
    assert main(train_argv(inputs, tmp_path / "run", *argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"--region_fc7 {fc7}: fc7 weight (4, 4)" in err
