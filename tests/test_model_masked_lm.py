"""Masked LM: VLP's counts, 80/10/10 over 10k draws, padding never predicted, tied output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlp.model import UnifiedVLP, VLPConfig, mask_text
from vlp.model.masked_lm import masked_lm_loss, predictions_per_example

MASK = 3


def config(**kw) -> VLPConfig:
    base = dict(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                intermediate_size=48, max_position_embeddings=64, region_feature_dim=8,
                region_hidden_size=8, region_classes=2, max_regions=4, cls_token_id=1,
                sep_token_id=2, mask_token_id=MASK)
    return VLPConfig(**{**base, **kw})


def test_prediction_counts_follow_vlp_rounding_min_one_max_pred():
    # lengths count the final [SEP]: 1, 3, 7, 10 and 29 words.
    lengths = torch.tensor([2, 4, 8, 11, 30])
    assert predictions_per_example(lengths, 0.15, 3).tolist() == [1, 1, 1, 2, 3]
    assert predictions_per_example(lengths, 0.5, 20).tolist() == [1, 2, 4, 5, 14]


def test_80_10_10_and_uniform_positions_over_10k_draws():
    n, words = 10_000, 20
    ids = torch.randint(10, 1000, (n, words + 1))
    lengths = torch.full((n,), words + 1)
    out = mask_text(ids, lengths, config(), torch.Generator().manual_seed(0))
    assert out.weights.all() and out.positions.shape == (n, 3)
    assert torch.equal(out.labels, ids.gather(1, out.positions))
    new = out.input_ids.gather(1, out.positions)
    masked = (new == MASK).float().mean().item()
    unchanged = (new == out.labels).float().mean().item()
    random = 1.0 - masked - unchanged
    assert abs(masked - 0.8) < 0.015
    # A random token equals the original 1 time in 1000: within the tolerance.
    assert abs(random - 0.1) < 0.01 and abs(unchanged - 0.1) < 0.01
    # Each of the 21 candidates (the final [SEP] included) is picked 3/21 of the time.
    counts = torch.bincount(out.positions.flatten(), minlength=words + 1).float()
    assert counts.shape[0] == words + 1
    assert (counts - 3 * n / (words + 1)).abs().max() < 200
    # Positions never repeat within an example, and nothing else changes.
    assert all(len(set(row)) == 3 for row in out.positions.tolist())
    untouched = torch.ones_like(ids, dtype=torch.bool).scatter(1, out.positions, False)
    assert torch.equal(out.input_ids[untouched], ids[untouched])


def test_padding_is_never_predicted_nor_changed():
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 9, (2000,), generator=g)
    ids = torch.randint(10, 1000, (2000, 8), generator=g)
    pad = torch.arange(8)[None, :] >= lengths[:, None]
    ids[pad] = 0
    out = mask_text(ids, lengths, config(), g)
    assert (out.positions[out.weights] < lengths[:, None].expand_as(out.positions)[out.weights]).all()
    assert torch.equal(out.weights.sum(1), predictions_per_example(lengths, 0.15, 3))
    assert (out.input_ids[pad] == 0).all()


def test_output_layer_is_the_word_embedding_matrix():
    torch.manual_seed(0)
    model = UnifiedVLP(config())
    assert not any("decoder" in k for k in model.state_dict())
    b = dict(text_ids=torch.randint(10, 1000, (2, 5)), text_lengths=torch.tensor([5, 3]),
             region_features=torch.randn(2, 2, 8), region_locations=torch.rand(2, 2, 8),
             num_regions=torch.tensor([2, 1]))
    loss = model.pretraining_loss(**b, generator=torch.Generator().manual_seed(0))["loss"]
    loss.backward()
    grad = model.embeddings.word_embeddings.weight.grad
    # Rows of words that appear nowhere in the input still get gradient: from the output layer.
    unused = torch.ones(1000, dtype=torch.bool)
    unused[b["text_ids"].flatten()] = False
    unused[[0, 1, 2, 3]] = False
    assert grad[unused].abs().sum() > 0


def test_loss_is_the_mean_over_real_predictions_not_over_examples():
    """One example predicts 1 token, the other 3: VLP averages the 4 predictions."""
    torch.manual_seed(0)
    cfg = config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = UnifiedVLP(cfg).eval()
    b = dict(text_ids=torch.randint(10, 1000, (2, 30)), text_lengths=torch.tensor([3, 30]),
             region_features=torch.randn(2, 2, 8), region_locations=torch.rand(2, 2, 8),
             num_regions=torch.tensor([2, 1]))
    s2s = torch.tensor([True, False])
    with torch.no_grad():
        loss = model.pretraining_loss(**b, s2s=s2s, generator=torch.Generator().manual_seed(5))
        masked = mask_text(b["text_ids"], b["text_lengths"], cfg, torch.Generator().manual_seed(5))
        assert masked.weights.sum(1).tolist() == [1, 3]
        hidden = model(masked.input_ids, b["text_lengths"], b["region_features"],
                       b["region_locations"], b["num_regions"], s2s)
        per_token = []
        for i in range(2):
            for j in masked.positions[i][masked.weights[i]].tolist():
                logits = model.mlm_logits(hidden[i, 2 + 2 + j])
                per_token.append(torch.nn.functional.cross_entropy(logits[None],
                                                                   b["text_ids"][i, j][None]))
    expected = torch.stack(per_token)
    assert torch.allclose(loss["loss"], expected.mean(), atol=1e-5)
    # Averaging per example first would weigh the lone prediction as much as the three.
    per_example = (expected[0] + expected[1:].mean()) / 2
    assert not torch.allclose(expected.mean(), per_example, atol=1e-3)


def test_drop_worst_leaves_out_the_worst_examples_and_their_predictions():
    # Three examples: 1, 2 and 2 predictions; losses per prediction set by the logits.
    labels = torch.tensor([[1, 0], [1, 1], [1, 1]])
    weights = torch.tensor([[True, False], [True, True], [True, True]])
    logits = torch.zeros(3, 2, 4)
    logits[0, 0, 1] = 5.0    # example 0: nearly right, small loss
    logits[1, :, 0] = 5.0    # example 1: confidently wrong twice, the worst
    logits[2, :, 1] = 1.0    # example 2: in between
    per = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                            reduction="none").view(3, 2)
    kept_mean = (per[0, 0] + per[2].sum()) / 3
    assert torch.allclose(masked_lm_loss(logits, labels, weights, drop_worst=0.2),
                          kept_mean)
    # VLP keeps int(B * (1 - ratio)) examples: 0.2 of 3 keeps 2, 0.5 keeps 1, 0 keeps all.
    assert torch.allclose(masked_lm_loss(logits, labels, weights, drop_worst=0.5), per[0, 0])
    assert torch.allclose(masked_lm_loss(logits, labels, weights),
                          per[weights].sum() / 5)


# -- VLP's label smoothing and reduction, transcribed (pytorch_pretrained_bert/loss.py and
# BertForPreTrainingLossMask.forward) --------------------------------------------------------

class VLPLabelSmoothingLoss(torch.nn.modules.loss._Loss):
    def __init__(self, label_smoothing=0, tgt_vocab_size=0, ignore_index=0, size_average=None,
                 reduce=None, reduction="mean"):
        assert 0.0 < label_smoothing <= 1.0
        self.ignore_index = ignore_index
        super().__init__(size_average=size_average, reduce=reduce, reduction=reduction)
        smoothing_value = label_smoothing / (tgt_vocab_size - 2)
        one_hot = torch.full((tgt_vocab_size,), smoothing_value)
        one_hot[self.ignore_index] = 0
        self.register_buffer("one_hot", one_hot.unsqueeze(0))
        self.confidence = 1.0 - label_smoothing
        self.tgt_vocab_size = tgt_vocab_size

    def forward(self, output, target):
        assert self.tgt_vocab_size == output.size(2)
        batch_size, num_pos = target.size(0), target.size(1)
        output = output.view(-1, self.tgt_vocab_size)
        target = target.view(-1)
        model_prob = self.one_hot.repeat(target.size(0), 1)
        model_prob.scatter_(1, target.unsqueeze(1), self.confidence)
        model_prob.masked_fill_((target == self.ignore_index).unsqueeze(1), 0)
        return F.kl_div(output, model_prob, reduction="none").view(batch_size, num_pos, -1).sum(2)


def vlp_loss_mask_and_normalize(loss, mask, drop_worst_ratio):
    mask = mask.type_as(loss)
    loss = loss * mask
    keep_loss, keep_ind = torch.topk(loss.sum(-1), int(loss.size(0) * (1 - drop_worst_ratio)),
                                     largest=False)
    denominator = torch.sum(mask.sum(-1)[keep_ind]) + 1e-5
    return (keep_loss / denominator).sum()


def vlp_masked_lm_loss(scores, labels, weights, smoothing, drop_worst_ratio):
    if smoothing:
        crit = VLPLabelSmoothingLoss(smoothing, scores.shape[-1], ignore_index=0,
                                     reduction="none")
        loss = crit(F.log_softmax(scores.float(), dim=-1), labels)
    else:
        loss = torch.nn.CrossEntropyLoss(reduction="none")(scores.transpose(1, 2).float(), labels)
    return vlp_loss_mask_and_normalize(loss.float(), weights, drop_worst_ratio)


def smoothing_batch(vocab=40, seed=0):
    """Six examples with 3, 2, 1, 3, 0 and 2 real predictions (filler slots labelled 0,
    VLP's [PAD]), logits far enough apart that dropping the worst is unambiguous."""
    g = torch.Generator().manual_seed(seed)
    counts = [3, 2, 1, 3, 0, 2]
    weights = torch.arange(3)[None, :] < torch.tensor(counts)[:, None]
    labels = torch.randint(1, vocab, (6, 3), generator=g).masked_fill(~weights, 0)
    logits = torch.randn(6, 3, vocab, generator=g) * 3
    return logits, labels, weights


@pytest.mark.parametrize("drop", [0.0, 0.2, 0.5])
@pytest.mark.parametrize("smoothing", [0.1, 0.3, 1.0])
def test_label_smoothed_loss_is_vlps_value_and_gradient(smoothing, drop):
    logits, labels, weights = smoothing_batch()
    ours_in = logits.clone().requires_grad_()
    theirs_in = logits.clone().requires_grad_()
    ours = masked_lm_loss(ours_in, labels, weights, label_smoothing=smoothing, drop_worst=drop)
    theirs = vlp_masked_lm_loss(theirs_in, labels, weights, smoothing, drop)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, rtol=0, atol=1e-7)


@pytest.mark.parametrize("drop", [0.0, 0.5])
def test_unsmoothed_loss_is_vlps_value(drop):
    logits, labels, weights = smoothing_batch(seed=1)
    torch.testing.assert_close(masked_lm_loss(logits, labels, weights, drop_worst=drop),
                               vlp_masked_lm_loss(logits, labels, weights, 0, drop),
                               rtol=0, atol=1e-6)


def test_smoothed_loss_is_not_torchs_label_smoothed_cross_entropy():
    # torch spreads the share over every token, padding and the label included, and its
    # value carries the target's entropy: neither the value nor the gradient is VLP's.
    logits, labels, weights = smoothing_batch()
    logits.requires_grad_()
    ours = masked_lm_loss(logits, labels, weights, label_smoothing=0.1)
    torchs = (F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none",
                              label_smoothing=0.1) * weights.flatten()).sum() / weights.sum()
    assert abs(float(ours.detach()) - float(torchs.detach())) > 0.1
    ours_grad, = torch.autograd.grad(ours, logits)
    torchs_grad, = torch.autograd.grad(torchs, logits)
    assert float((ours_grad - torchs_grad).abs().max()) > 1e-5


def test_padding_takes_no_share_whatever_its_id():
    # VLP's [PAD] was id 0; a vocabulary with padding elsewhere keeps padding out the same way.
    logits, labels, weights = smoothing_batch()
    labels = labels.masked_fill(~weights, 7).masked_fill(weights & (labels == 7), 8)
    ours = masked_lm_loss(logits, labels, weights, label_smoothing=0.2, pad_id=7)
    crit = VLPLabelSmoothingLoss(0.2, logits.shape[-1], ignore_index=7, reduction="none")
    theirs = vlp_loss_mask_and_normalize(crit(F.log_softmax(logits, dim=-1), labels), weights, 0)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    padding_at_0 = masked_lm_loss(logits, labels, weights, label_smoothing=0.2)
    assert abs(float(padding_at_0) - float(ours)) > 1e-4
