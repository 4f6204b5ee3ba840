"""Checkpoint directories round-trip; pickles never run code; bad input names the mismatch."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from vlp.errors import VLPError
from vlp.model import UnifiedVLP, VLPConfig


def config(**kw) -> VLPConfig:
    base = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=24, max_position_embeddings=16, region_feature_dim=6,
                region_hidden_size=6, region_classes=2, max_regions=4, vqa_answers=5,
                layer_norm_eps=1e-5, cls_token_id=1, sep_token_id=2, mask_token_id=3)
    return VLPConfig(**{**base, **kw})


def batch(b=2, r=3, t=5):
    g = torch.Generator().manual_seed(0)
    return dict(text_ids=torch.randint(4, 50, (b, t), generator=g),
                text_lengths=torch.tensor([t, 2])[:b],
                region_features=torch.randn(b, r, 6, generator=g),
                region_locations=torch.rand(b, r, 8, generator=g),
                num_regions=torch.tensor([r, 1])[:b])


def test_save_then_load_gives_the_same_model_without_any_settings(tmp_path):
    torch.manual_seed(0)
    model = UnifiedVLP(config()).eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "model.safetensors"]
    loaded = UnifiedVLP.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(model(**batch()), loaded(**batch()))
        hidden = model(**batch())
        assert torch.equal(model.vqa_logits(hidden, 3), loaded.vqa_logits(hidden, 3))


def test_set_dropout_changes_every_rate_and_is_saved(tmp_path):
    torch.manual_seed(0)
    model = UnifiedVLP(config(hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5))
    with torch.no_grad():
        eval_out = model.eval()(**batch())
        assert not torch.equal(model.train()(**batch()), eval_out)
        model.set_dropout(0.0)  # no dropout left anywhere: training mode is deterministic
        assert torch.equal(model.train()(**batch()), eval_out)
    model.set_dropout(0.2)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = UnifiedVLP.from_pretrained(tmp_path / "ckpt")
    saved = loaded.config
    assert (saved.hidden_dropout_prob, saved.attention_probs_dropout_prob) == (0.2, 0.2)
    assert {m.p for m in loaded.modules() if isinstance(m, torch.nn.Dropout)} == {0.2}


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_with_code_in_it_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = UnifiedVLP(config())
    model.config.save(tmp_path / "config.json")
    state = dict(model.state_dict())
    state["embeddings.LayerNorm.weight"] = _Exploit()
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump(state, f, protocol=2)
    with pytest.raises(VLPError, match="never code"):
        UnifiedVLP.from_pretrained(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_a_legacy_bin_of_plain_tensors_loads(tmp_path):
    torch.manual_seed(0)
    model = UnifiedVLP(config()).eval()
    model.config.save(tmp_path / "config.json")
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    loaded = UnifiedVLP.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(**batch()), loaded(**batch()))


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16}))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(VLPError, match="architecture is None, expected 'UnifiedVLP'"):
        UnifiedVLP.from_pretrained(tmp_path)


def test_weights_that_do_not_fit_the_config_name_the_key(tmp_path):
    UnifiedVLP(config()).save_pretrained(tmp_path)
    config(intermediate_size=32).save(tmp_path / "config.json")
    with pytest.raises(VLPError, match=r"encoder\.layer\.0\.intermediate\.dense\.\w+ has shape"):
        UnifiedVLP.from_pretrained(tmp_path)
    config(vqa_answers=0).save(tmp_path / "config.json")
    with pytest.raises(VLPError, match=r"keys the model does not have: vqa_head"):
        UnifiedVLP.from_pretrained(tmp_path)


@pytest.mark.parametrize("change, message", [
    (lambda b: b.update(text_ids=torch.randint(4, 50, (2, 12)), text_lengths=torch.tensor([12, 2])),
     "longer than max_position_embeddings 16"),
    (lambda b: b.update(region_features=torch.randn(2, 5, 6), region_locations=torch.rand(2, 5, 8),
                        num_regions=torch.tensor([5, 1])),
     "5 region slots, more than the model's max_regions 4"),
    (lambda b: b.update(region_features=torch.randn(2, 3, 7)), r"\[batch, regions, 6\] \(config region_feature_dim\)"),
    (lambda b: b.update(region_locations=torch.rand(2, 3, 9)), r"region_locations has shape \(2, 3, 9\)"),
    (lambda b: b.update(num_regions=torch.tensor([4, 1])), r"num_regions must be in \[0, 3\]"),
    (lambda b: b.update(text_lengths=torch.tensor([6, 1])), r"text_lengths must be in \[1, 5\]"),
])
def test_bad_input_names_the_mismatch(change, message):
    model = UnifiedVLP(config())
    b = batch()
    change(b)
    with pytest.raises(VLPError, match=message):
        model(**b)


def test_bad_config_values_name_the_field():
    with pytest.raises(VLPError, match="hidden_size 30 is not a multiple of num_attention_heads 4"):
        config(hidden_size=30, num_attention_heads=4)
    with pytest.raises(VLPError, match="mask_token_id 60 is outside"):
        config(mask_token_id=60)
    with pytest.raises(VLPError, match=r"unknown model config keys \['hiden_size'\]"):
        VLPConfig.from_dict({"architecture": "UnifiedVLP", "hiden_size": 3})
