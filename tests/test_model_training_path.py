"""The CPU training path (explicit attention with one shared mask bias, sparse lookup
gradient under the tied MLM head) computes what the plain path computes."""

from __future__ import annotations

import torch

from vlp.model import UnifiedVLP, VLPConfig
from vlp.model.encoder import explicit_attention
from vlp.model.masked_lm import MaskDraws, mask_text


def _model(p: float) -> tuple[UnifiedVLP, dict]:
    torch.manual_seed(0)
    config = VLPConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=40, region_feature_dim=16,
                       region_hidden_size=16, region_classes=9, max_regions=6, cls_token_id=1,
                       sep_token_id=2, mask_token_id=3, max_pred=3, hidden_dropout_prob=p,
                       attention_probs_dropout_prob=p)
    b, r, t = 5, 6, 9
    text_lengths = torch.tensor([9, 4, 7, 1, 6])
    text_ids = torch.randint(4, 120, (b, t))
    text_ids[torch.arange(t)[None, :] >= text_lengths[:, None]] = 0
    batch = dict(text_ids=text_ids, text_lengths=text_lengths,
                 region_features=torch.randn(b, r, 16), region_locations=torch.rand(b, r, 15),
                 num_regions=torch.tensor([6, 0, 3, 2, 6]))
    return UnifiedVLP(config), batch


def test_training_forward_with_nothing_dropped_equals_the_eval_forward():
    # A rate below 1/65536 keeps every element with scale 1, so the CPU training path
    # (baddbmm with the shared bias, addcmul residuals) must give the SDPA eval result.
    model, batch = _model(1e-6)
    s2s = torch.tensor([True, False, True, False, True])
    expected = model.eval()(**batch, s2s=s2s)
    got = model.train()(**batch, s2s=s2s)
    assert torch.allclose(got, expected, atol=1e-5)
    ids = batch["text_ids"]
    mask = (ids != 0).long()
    assert torch.allclose(model.train().encode_text(ids, mask),
                          model.eval().encode_text(ids, mask), atol=1e-5)


def test_word_table_gradient_is_dense_and_equals_the_dense_lookups():
    model, batch = _model(0.0)
    model.train()
    draws = MaskDraws.sample(5, 9, 3, 120, generator=torch.Generator().manual_seed(1))
    s2s = torch.tensor([True, True, False, False, True])
    model.pretraining_loss(**batch, s2s=s2s, draws=draws)["loss"].backward()
    grad = model.embeddings.word_embeddings.weight.grad
    assert not grad.is_sparse  # the fused AdamW and clipping need a dense gradient
    model.zero_grad()
    masked = mask_text(batch["text_ids"], batch["text_lengths"], model.config, draws=draws)
    hidden = model(masked.input_ids, batch["text_lengths"], batch["region_features"],
                   batch["region_locations"], batch["num_regions"], s2s, sparse_words=False)
    model.masked_lm_loss(hidden, masked, 6).backward()
    assert torch.allclose(grad, model.embeddings.word_embeddings.weight.grad, atol=1e-7)


def test_bfloat16_training_without_dropout_takes_the_explicit_path_and_agrees():
    # With no dropout, bfloat16 training on the CPU runs the two batched products (SDPA's
    # CPU backward is several times slower in bfloat16); it must compute what SDPA does.
    cpu = torch.device("cpu")
    assert explicit_attention(True, cpu, 0.0, None, torch.bfloat16)
    assert not explicit_attention(True, cpu, 0.0, None, torch.float32)
    assert not explicit_attention(False, cpu, 0.0, None, torch.bfloat16)
    model, batch = _model(0.0)
    s2s = torch.tensor([True, False, True, False, True])
    direction = torch.randn(5, 6 + 2 + 9, 32)  # a loss whose gradient reaches the queries

    def run(train: bool, bf16: bool):
        model.zero_grad()
        model.train(train)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(**batch, s2s=s2s)
        (out.float() * direction).sum().backward()
        return out.float(), model.encoder.layer[0].attention.self.query.weight.grad.clone()

    sdpa_bf16, _ = run(False, True)
    explicit_bf16, grad_bf16 = run(True, True)
    _, grad_fp32 = run(True, False)
    assert torch.allclose(explicit_bf16, sdpa_bf16, atol=5e-2)
    assert (explicit_bf16 - sdpa_bf16).abs().mean() < 1e-2
    assert torch.allclose(grad_bf16, grad_fp32, atol=0.05 * grad_fp32.abs().max())
