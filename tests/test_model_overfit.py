"""A ToyWorld-sized model learns one batch: the whole training path is wired up."""

from __future__ import annotations

import math

import torch

from vlp.model import UnifiedVLP, VLPConfig


def test_a_toyworld_sized_model_overfits_one_batch():
    torch.manual_seed(0)
    config = VLPConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, max_position_embeddings=64, region_feature_dim=32,
                       region_hidden_size=32, region_classes=19, max_regions=10,
                       cls_token_id=1, sep_token_id=2, mask_token_id=3, mask_prob=0.3,
                       max_pred=4, s2s_prob=0.5, bi_prob=0.5, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)
    model = UnifiedVLP(config).train()
    b, r, t = 8, 10, 12
    text_ids = torch.randint(4, 200, (b, t))
    text_lengths = torch.randint(6, t + 1, (b,))
    text_ids[torch.arange(t)[None, :] >= text_lengths[:, None]] = 0
    text_ids[torch.arange(b), text_lengths - 1] = 2
    batch = dict(text_ids=text_ids, text_lengths=text_lengths,
                 region_features=torch.randn(b, r, 32),
                 region_locations=torch.rand(b, r, 25),
                 num_regions=torch.randint(3, r + 1, (b,)))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    losses = []
    for _ in range(120):
        # The same draw every step (objectives and masked tokens): one fixed batch.
        out = model.pretraining_loss(**batch, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert abs(losses[0] - math.log(200)) < 1.0
    assert losses[-1] < 0.05, losses[-10:]
    # Every parameter took part (the VQA head is absent in this config).
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for n, p in model.named_parameters()), [n for n, p in model.named_parameters()
                                                        if p.grad is None or not p.grad.abs().sum()]
