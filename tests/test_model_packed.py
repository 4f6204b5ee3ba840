"""The encoder runs its position-wise layers on the real positions alone: the real
positions' outputs and every gradient are what the whole padded batch gives."""

from __future__ import annotations

import pytest
import torch

from vlp.model import UnifiedVLP, VLPConfig


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, r, t = 8, 6, 12
    return dict(text_ids=torch.randint(5, 300, (b, t), generator=g),
                text_lengths=torch.randint(2, t + 1, (b,), generator=g),
                region_features=torch.randn(b, r, 16, generator=g),
                region_locations=torch.rand(b, r, 11, generator=g),
                num_regions=torch.randint(1, r + 1, (b,), generator=g),
                s2s=torch.rand(b, generator=g) < 0.5)


@pytest.mark.parametrize("bf16", [False, True])
def test_packed_positions_give_the_padded_batchs_outputs_and_gradients(bf16):
    torch.manual_seed(0)
    cfg = VLPConfig(vocab_size=300, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                    intermediate_size=128, region_feature_dim=16, region_classes=5,
                    max_regions=6, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = UnifiedVLP(cfg).train()
    inputs = batch()
    target = torch.randn(8, 20, 64)

    def run(packed: bool):
        model.zero_grad()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            x, layout, _ = model._embed(*inputs.values(), False)
            hidden = model.encoder(x, layout.mask, valid=layout.valid if packed else None)
        real = layout.valid
        loss = ((hidden.float() - target[:, :hidden.shape[1]]) ** 2)[real].sum()
        loss.backward()
        return hidden.detach(), real, {n: p.grad.clone() for n, p in model.named_parameters()
                                       if p.grad is not None}

    padded, real, padded_grads = run(False)
    packed, _, packed_grads = run(True)
    assert real.float().mean() < 0.8  # the batch has padding to skip
    assert torch.equal(packed[real], padded[real])
    assert packed[~real].abs().max() == 0.0
    assert padded_grads.keys() == packed_grads.keys()
    # The same sums over the same positions, in another order: bfloat16 rounds them apart.
    tolerance = 1e-2 if bf16 else 1e-5
    for name, grad in padded_grads.items():
        assert (packed_grads[name] - grad).norm() <= tolerance * grad.norm() + 1e-7, name
