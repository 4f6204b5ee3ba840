"""VLP's model-shaping training flags against transcriptions of VLP's own code:
--vis_mask_prob (hidden regions and their loss), --relax_projection (one masked-LM
projection per task index; its checkpoints), --max_position_embeddings (the table cut or
grown on loading) and --config_path (a BERT config JSON)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_model_convert import H, vlp_state
from vlp.errors import VLPError
from vlp.model import MaskDraws, UnifiedVLP, VLPConfig, mask_text
from vlp.model.convert import fit_positions, fit_relax_projection, from_vlp_bin, hf_bert_config
from vlp.model.masked_lm import masked_lm_loss

R, T, D, C = 6, 5, 8, 3  # regions (all slots filled, as VLP's 100), text slots, dims


def config(**kw) -> VLPConfig:
    base = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=24, max_position_embeddings=32, region_feature_dim=D,
                region_hidden_size=D, region_classes=C, max_regions=R, cls_token_id=1,
                sep_token_id=2, mask_token_id=3, layer_norm_eps=1e-5,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return VLPConfig(**{**base, **kw})


def batch(b: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(text_ids=torch.randint(5, 60, (b, T), generator=g),
                text_lengths=torch.full((b,), T),
                region_features=torch.randn(b, R, D, generator=g),
                region_locations=torch.randn(b, R, C + 6, generator=g),
                num_regions=torch.full((b,), R))


def randomise(model: UnifiedVLP, seed: int = 0) -> UnifiedVLP:
    """Weights far from BERT's small init, so that every part of the network matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


# -- transcriptions of VLP (seq2seq_loader.Preprocess4Seq2seq, modeling.py) -------------

def vlp_input_mask(len_a: int, len_b: int, s2s: bool, vis_masked_pos,
                   as_meant: bool = False) -> torch.Tensor:
    """Preprocess4Seq2seq.__call__'s self-attention mask (max_len = the sequence);
    `as_meant`: with its region-blocking line doing what it meant to."""
    max_len = len_a + len_b + 3
    _tril_matrix = torch.tril(torch.ones((max_len, max_len), dtype=torch.long))
    input_mask = torch.zeros(max_len, max_len, dtype=torch.long)
    second_st, second_end = len_a + 2, len_a + len_b + 3
    if s2s:
        input_mask[:, :len_a + 2].fill_(1)
        input_mask[second_st:second_end, second_st:second_end].copy_(
            _tril_matrix[:second_end - second_st, :second_end - second_st])
    else:
        input_mask = torch.tensor([1] * max_len, dtype=torch.long) \
            .unsqueeze(0).expand(max_len, max_len).clone()
    if as_meant:
        input_mask[:, vis_masked_pos] = 0
    else:
        input_mask[:, vis_masked_pos].fill_(0)  # block the masked visual feature
    return input_mask


def vlp_forward(model: UnifiedVLP, input_ids, s2s, x, vis_masked_pos, as_meant=False):
    """BertForPreTrainingLossMask.forward up to the losses, with mask_image_regions:
    hidden states, pooled output, and the region embeddings vis_feats / vis_pe."""
    feats, locs = x["region_features"], x["region_locations"]
    vis_feats = model.region.feature(feats)
    vis_pe = model.region.location(locs)
    vis_feat_mask = torch.zeros(*vis_feats.size()[:2], 1, dtype=torch.bool)
    for bb in range(vis_masked_pos.size(0)):
        for pp in range(vis_masked_pos.size(1)):
            vis_feat_mask[bb, vis_masked_pos[bb, pp] - 1] = 1
    b = input_ids.shape[0]
    # [CLS] + len_vis_input [UNK] + [SEP] + caption (+ its [SEP]), as the loader built it.
    ids = torch.cat([torch.full((b, 1), 1), torch.zeros(b, R, dtype=torch.long),
                     torch.full((b, 1), 2), input_ids], 1)
    seq_length = ids.size(1)
    position_ids = torch.arange(seq_length, dtype=torch.long).unsqueeze(0).expand_as(ids)
    e = model.embeddings
    words_embeddings = e.word_embeddings(ids)
    position_embeddings = e.position_embeddings(position_ids)
    words_embeddings = torch.cat((words_embeddings[:, :1], vis_feats.masked_fill(vis_feat_mask, 0.),
                                  words_embeddings[:, R + 1:]), dim=1)
    position_embeddings = torch.cat((position_embeddings[:, :1], vis_pe.masked_fill(vis_feat_mask, 0.),
                                     position_embeddings[:, R + 1:]), dim=1)
    segment_ids = torch.tensor([[4] * (R + 2) + [5] * T if s else [0] * (R + 2) + [1] * T
                                for s in s2s.tolist()])
    embeddings = words_embeddings + position_embeddings + e.token_type_embeddings(segment_ids)
    embeddings = e.LayerNorm(embeddings)
    masks = torch.stack([vlp_input_mask(R, T - 1, s, vis_masked_pos[i].numpy(), as_meant)
                         for i, s in enumerate(s2s.tolist())])
    sequence_output = model.encoder(embeddings, masks.bool()[:, None])
    pooled_output = torch.tanh(model.pooler.dense(sequence_output[:, 0]))
    return sequence_output, pooled_output, vis_feats, vis_pe


def vlp_pretext_loss(vis_feats, vis_pe, pooled_output, vis_masked_pos):
    """The "Selfie-like pretext" loss of BertForPreTrainingLossMask.forward."""
    masked_vis_feats = torch.gather(vis_feats, 1,
        (vis_masked_pos-1).unsqueeze(-1).expand((-1, -1, vis_feats.size(-1))))
    masked_pos_enc = torch.gather(vis_pe, 1,
        (vis_masked_pos-1).unsqueeze(-1).expand((-1, -1, vis_pe.size(-1))))
    masked_pos_enc += pooled_output.unsqueeze(1).expand_as(masked_pos_enc)
    sim_mat = torch.matmul(masked_pos_enc, masked_vis_feats.permute(0, 2, 1).contiguous())
    sim_mat = F.log_softmax(sim_mat, dim=-1)
    vis_pretext_loss = []
    for i in range(sim_mat.size(0)):
        vis_pretext_loss.append(sim_mat[i].diag().mean().view(1)*-1.)
    return torch.cat(vis_pretext_loss).mean()


def vlp_lm_prediction_head(model: UnifiedVLP, hidden_states, task_idx, relax_projection):
    """BertLMPredictionHead(BertPredictionHeadTransform) with VLP's BertLayerNorm."""
    head = model.mlm_head
    x = F.linear(hidden_states, head.dense.weight, head.dense.bias)
    x = x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    u = x.mean(-1, keepdim=True)
    s = (x - u).pow(2).mean(-1, keepdim=True)
    x = (x - u) / torch.sqrt(s + 1e-5)
    hidden_states = head.LayerNorm.weight * x + head.LayerNorm.bias
    if relax_projection > 1:
        num_batch = hidden_states.size(0)
        num_pos = hidden_states.size(1)
        hidden_states = hidden_states.view(
            num_batch, num_pos, relax_projection, -1)[torch.arange(0, num_batch).long(), :, task_idx, :]
    return F.linear(hidden_states, model.embeddings.word_embeddings.weight) + head.bias


def vlp_relax_state_fit(state: dict, hidden_size: int, relax_projection: int, task_idx) -> dict:
    """PreTrainedBertModel.from_pretrained's "initialize relax projection" block."""
    _k = 'cls.predictions.transform.dense.weight'
    n_config_relax = 1 if (relax_projection < 1) else relax_projection
    if (_k in state) and (n_config_relax*hidden_size != state[_k].shape[0]):
        assert state[_k].shape[0] % hidden_size == 0
        n_state_relax = state[_k].shape[0]//hidden_size
        assert (n_state_relax == 1) != (n_config_relax == 1)
        if n_state_relax == 1:
            state[_k].data = state[_k].data.unsqueeze(0).repeat(
                n_config_relax, 1, 1).reshape((n_config_relax*hidden_size, hidden_size))
            for _k in ('cls.predictions.transform.dense.bias', 'cls.predictions.transform.LayerNorm.weight', 'cls.predictions.transform.LayerNorm.bias'):
                state[_k].data = state[_k].data.unsqueeze(0).repeat(n_config_relax, 1).view(-1)
        elif n_config_relax == 1:
            _task_idx = task_idx if (task_idx is not None) and (0 <= task_idx <= 3) else 0
            _k = 'cls.predictions.transform.dense.weight'
            state[_k].data = state[_k].data.view(
                n_state_relax, hidden_size, hidden_size).select(0, _task_idx)
            for _k in ('cls.predictions.transform.dense.bias', 'cls.predictions.transform.LayerNorm.weight', 'cls.predictions.transform.LayerNorm.bias'):
                state[_k].data = state[_k].data.view(n_state_relax, hidden_size).select(0, _task_idx)
    return state


def vlp_position_fit(weight: torch.Tensor, max_position_embeddings: int) -> torch.Tensor:
    """from_pretrained's "initialize new position embeddings" block."""
    weight = weight.clone()
    if max_position_embeddings > weight.shape[0]:
        old_size = weight.shape[0]
        weight.resize_(max_position_embeddings, weight.shape[1])
        start = old_size
        while start < max_position_embeddings:
            chunk_size = min(old_size, max_position_embeddings - start)
            weight[start:start+chunk_size, :].copy_(weight[:chunk_size, :])
            start += chunk_size
    elif max_position_embeddings < weight.shape[0]:
        weight = weight[:max_position_embeddings, :]
    return weight


# -- --vis_mask_prob ----------------------------------------------------------------------

def vis_masked_pos_draw(b: int, k: int, seed: int) -> torch.Tensor:
    """VLP's draw: np.random.choice(len_vis_input, k, replace=False) + 1 per example."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(R, generator=g)[:k] for _ in range(b)]) + 1


def test_vlps_region_blocking_line_changed_a_copy_of_the_mask():
    positions = np.array([2, 5])
    assert vlp_input_mask(R, T - 1, True, positions).equal(vlp_input_mask(R, T - 1, True, []))
    assert vlp_input_mask(R, T - 1, True, positions, as_meant=True)[:, positions].sum() == 0


@pytest.mark.parametrize("block", [False, True])
def test_masked_regions_match_vlps_forward_and_pretext_loss(block):
    model = randomise(UnifiedVLP(config(pooler=True)))
    x = batch()
    s2s = torch.tensor([True, False, True, False])
    vis_masked_pos = vis_masked_pos_draw(4, 3, seed=1)
    region_masked = torch.zeros(4, R, dtype=torch.bool).scatter(1, vis_masked_pos - 1, True)
    g = torch.Generator().manual_seed(2)
    draws = MaskDraws.sample(4, T, 3, 60, generator=g)

    with torch.no_grad():
        out = model.pretraining_loss(**x, s2s=s2s, draws=draws, region_masked=region_masked,
                                     block_masked=block)
        masked = mask_text(x["text_ids"], x["text_lengths"], model.config, draws=draws)
        hidden, pooled, vis_feats, vis_pe = vlp_forward(model, masked.input_ids, s2s, x,
                                                        vis_masked_pos, as_meant=block)
        ours, _ = model.encode(masked.input_ids, x["text_lengths"], x["region_features"],
                               x["region_locations"], x["num_regions"], s2s,
                               region_masked=region_masked, block_masked=block)
        expected_region = vlp_pretext_loss(vis_feats, vis_pe, pooled, vis_masked_pos)
    assert (ours - hidden).abs().max() < 1e-5
    assert abs(float(out["region_loss"]) - float(expected_region)) < 1e-6
    # The total is VLP's masked_lm_loss + vis_pretext_loss.
    assert abs(float(out["loss"]) - float(out["mlm_loss"] + out["region_loss"])) < 1e-6


def test_a_masked_regions_features_reach_no_output():
    """A masked slot is zero whatever the region; blocked, it is not even attended to."""
    model = randomise(UnifiedVLP(config(pooler=True)))
    x = batch(2)
    hide = torch.zeros(2, R, dtype=torch.bool)
    hide[:, 2] = True
    s2s = torch.tensor([True, False])
    with torch.no_grad():
        outputs = {}
        for block in (False, True):
            a = model(**x, s2s=s2s, region_masked=hide, block_masked=block)
            changed = {k: v.clone() for k, v in x.items()}
            changed["region_features"][:, 2] += 5.0
            changed["region_locations"][:, 2] -= 3.0
            b = model(**changed, s2s=s2s, region_masked=hide, block_masked=block)
            assert torch.allclose(a, b, atol=1e-6)
            outputs[block] = a
        assert not torch.allclose(outputs[False], model(**x, s2s=s2s), atol=1e-3)
        assert not torch.allclose(outputs[False], outputs[True], atol=1e-3)


def test_examples_hiding_different_counts_average_as_vlp_per_example():
    """Per example VLP's loss; examples hiding nothing (too few regions) weigh nothing."""
    model = randomise(UnifiedVLP(config(pooler=True)))
    x = batch(3)
    hide = torch.zeros(3, R, dtype=torch.bool)
    hide[0, [0, 4]] = True
    hide[2, [1, 2, 5]] = True
    s2s = torch.ones(3, dtype=torch.bool)
    with torch.no_grad():
        hidden, parts = model.encode(**x, s2s=s2s, region_masked=hide)
        got = model.masked_region_loss(hidden, parts, hide)
        pooled = model.pooler(hidden)
        each = [vlp_pretext_loss(parts[0][i:i + 1], parts[1][i:i + 1], pooled[i:i + 1],
                                 hide[i].nonzero().T + 1) for i in (0, 2)]
    assert abs(float(got) - float(sum(each) / 2)) < 1e-6


def test_the_region_loss_trains_the_pooler_and_region_layers():
    model = UnifiedVLP(config(pooler=True)).train()
    x = batch(2)
    hide = torch.zeros(2, R, dtype=torch.bool)
    hide[:, [1, 3]] = True
    out = model.pretraining_loss(**x, generator=torch.Generator().manual_seed(0),
                                 region_masked=hide)
    out["loss"].backward()
    for name in ("pooler.dense.weight", "region.feature.0.weight", "region.location.0.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name


def test_without_hidden_regions_the_loss_is_the_masked_lm_alone():
    model = randomise(UnifiedVLP(config(pooler=True)))
    x = batch()
    g = torch.Generator().manual_seed(3)
    draws = MaskDraws.sample(4, T, 3, 60, generator=g)
    plain = randomise(UnifiedVLP(config()))
    with torch.no_grad():
        out = model.pretraining_loss(**x, draws=draws)
        same = plain.pretraining_loss(**x, draws=draws)
    # The pooler is registered last, so both models got the same other weights.
    assert set(plain.state_dict()) == set(model.state_dict()) - {"pooler.dense.weight",
                                                                 "pooler.dense.bias"}
    assert set(out) == {"loss", "mlm_loss"} and torch.equal(out["loss"], same["loss"])


# -- --relax_projection -------------------------------------------------------------------

def test_relaxed_head_matches_vlps_projection_by_task_index():
    model = randomise(UnifiedVLP(config(relax_projection=4)))
    hidden = torch.randn(4, 3, 16)
    task_idx = torch.tensor([3, 0, 0, 3])
    with torch.no_grad():
        ours = model.mlm_logits(hidden, task_idx)
        vlp = vlp_lm_prediction_head(model, hidden, task_idx, 4)
        assert (ours - vlp).abs().max() < 1e-5
        # Decoding steps give [B, H] and no index: seq2seq's projection (VLP's task_idx 3).
        step = model.mlm_logits(hidden[:, 0])
        assert (step - vlp_lm_prediction_head(model, hidden[:, :1], 3, 4)[:, 0]).abs().max() < 1e-5


def test_masked_lm_loss_uses_seq2seq_projection_3_and_bidirectional_0():
    model = randomise(UnifiedVLP(config(relax_projection=4)))
    x = batch()
    s2s = torch.tensor([True, False, False, True])
    g = torch.Generator().manual_seed(4)
    draws = MaskDraws.sample(4, T, 3, 60, generator=g)
    with torch.no_grad():
        got = model.pretraining_loss(**x, s2s=s2s, draws=draws)["mlm_loss"]
        masked = mask_text(x["text_ids"], x["text_lengths"], model.config, draws=draws)
        hidden = model(masked.input_ids, x["text_lengths"], x["region_features"],
                       x["region_locations"], x["num_regions"], s2s)
        at = (masked.positions + R + 2)[..., None].expand(-1, -1, 16)
        # Preprocess4Seq2seq: task_idx 3 in "s2s" mode, 0 in "bi".
        vlp_task_idx = torch.tensor([3 if s else 0 for s in s2s.tolist()])
        logits = vlp_lm_prediction_head(model, hidden.gather(1, at), vlp_task_idx, 4)
        expected = masked_lm_loss(logits, masked.labels, masked.weights)
        other = vlp_lm_prediction_head(model, hidden.gather(1, at), torch.tensor([1] * 4), 4)
    assert abs(float(got) - float(expected)) < 1e-5
    assert abs(float(got) - float(masked_lm_loss(other, masked.labels, masked.weights))) > 1e-3


def relaxed_vlp_state() -> dict:
    state = vlp_state()
    g = torch.Generator().manual_seed(5)
    state["cls.predictions.transform.dense.weight"] = torch.randn(4 * H, H, generator=g)
    for name in ("dense.bias", "LayerNorm.weight", "LayerNorm.bias"):
        state[f"cls.predictions.transform.{name}"] = torch.randn(4 * H, generator=g)
    return state


def test_a_vlp_bin_trained_with_relax_projection_loads_with_its_four_projections(tmp_path):
    state = relaxed_vlp_state()
    torch.save(state, tmp_path / "model.10.bin")
    model = from_vlp_bin(UnifiedVLP, tmp_path / "model.10.bin", num_attention_heads=2,
                         max_regions=4)
    assert model.config.relax_projection == 4
    assert torch.equal(model.mlm_head.dense.weight, state["cls.predictions.transform.dense.weight"])
    assert torch.equal(model.mlm_head.LayerNorm.bias,
                       state["cls.predictions.transform.LayerNorm.bias"])
    # VLP's pooler has its place now: the masked-region loss reads it.
    assert torch.equal(model.pooler.dense.weight, state["bert.pooler.dense.weight"])


@pytest.mark.parametrize("task_idx", [3, 0])
def test_cutting_four_projections_to_one_picks_the_runs_task_index_as_vlp(tmp_path, task_idx):
    state = relaxed_vlp_state()
    torch.save(state, tmp_path / "model.10.bin")
    model = from_vlp_bin(UnifiedVLP, tmp_path / "model.10.bin", num_attention_heads=2,
                         max_regions=4)
    cut = fit_relax_projection(model, 0, task_idx)
    expected = vlp_relax_state_fit({k: v.clone() for k, v in state.items()}, H, 0, task_idx)
    assert cut.config.relax_projection == 0
    for vlp_name, ours in (("dense.weight", cut.mlm_head.dense.weight),
                           ("dense.bias", cut.mlm_head.dense.bias),
                           ("LayerNorm.weight", cut.mlm_head.LayerNorm.weight),
                           ("LayerNorm.bias", cut.mlm_head.LayerNorm.bias)):
        assert torch.equal(ours, expected[f"cls.predictions.transform.{vlp_name}"]), vlp_name
    assert torch.equal(cut.encoder.layer[1].output.dense.weight,
                       model.encoder.layer[1].output.dense.weight)


def test_one_projection_is_copied_into_four_as_vlp(tmp_path):
    state = vlp_state()
    torch.save(state, tmp_path / "model.3.bin")
    model = from_vlp_bin(UnifiedVLP, tmp_path / "model.3.bin", num_attention_heads=2,
                         max_regions=4)
    grown = fit_relax_projection(model, 4, 3)
    expected = vlp_relax_state_fit({k: v.clone() for k, v in state.items()}, H, 4, 3)
    assert grown.config.relax_projection == 4
    assert torch.equal(grown.mlm_head.dense.weight,
                       expected["cls.predictions.transform.dense.weight"])
    assert torch.equal(grown.mlm_head.LayerNorm.weight,
                       expected["cls.predictions.transform.LayerNorm.weight"])
    # A relaxed checkpoint saves and loads as any other.
    grown.save_pretrained(tmp_path / "relaxed")
    again = UnifiedVLP.from_pretrained(tmp_path / "relaxed")
    assert again.config.relax_projection == 4
    assert torch.equal(again.mlm_head.dense.bias, grown.mlm_head.dense.bias)


def test_old_checkpoint_configs_load_with_one_projection_and_no_pooler(tmp_path):
    model = UnifiedVLP(config())
    model.save_pretrained(tmp_path / "old")
    saved = json.loads((tmp_path / "old" / "config.json").read_text())
    del saved["relax_projection"], saved["pooler"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(saved))
    again = UnifiedVLP.from_pretrained(tmp_path / "old")
    assert again.config.relax_projection == 0 and again.pooler is None


# -- --max_position_embeddings ------------------------------------------------------------

@pytest.mark.parametrize("rows", [40, 16, 10, 7])
def test_position_table_is_cut_or_grown_by_repetition_as_vlp(rows):
    weight = torch.randn(16, 4)
    assert torch.equal(fit_positions(weight, rows), vlp_position_fit(weight, rows))


# -- --config_path --------------------------------------------------------------------------

def test_a_vlp_style_bert_config_json_gives_the_model_its_sizes(tmp_path):
    """VLP's BertConfig.from_json_file took every key of the file; an original
    bert_config.json names no model_type."""
    bert_config = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
                   "hidden_dropout_prob": 0.1, "hidden_size": 24, "initializer_range": 0.02,
                   "intermediate_size": 40, "max_position_embeddings": 128,
                   "num_attention_heads": 3, "num_hidden_layers": 1, "type_vocab_size": 2,
                   "vocab_size": 199}
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(bert_config))
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({**bert_config, "model_type": "bert",
                                                   "hidden_size": 48}))
    c = hf_bert_config(other, {"max_regions": 10}, path)
    for key in ("hidden_size", "intermediate_size", "max_position_embeddings",
                "num_attention_heads", "num_hidden_layers", "vocab_size"):
        assert getattr(c, key) == bert_config[key], key
    with pytest.raises(VLPError, match="--config_path .*nope.json: no such file"):
        hf_bert_config(other, {}, tmp_path / "nope.json")
