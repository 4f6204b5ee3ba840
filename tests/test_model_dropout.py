"""The CPU dropout: torch's distribution from 16 random bits per element."""

import pytest
import torch
import torch.nn.functional as F

from vlp.model import VLPConfig, build_layout
from vlp.model.dropout import LEVELS, Dropout, dropout, dropout_add, keep_mask, keep_weights
from vlp.model.encoder import attention_with_dropout, scores_bias

N = 1 << 20


def test_rate_and_scale_are_torchs_to_one_part_in_65536():
    torch.manual_seed(0)
    keep, scale = keep_mask((N,), 0.1)
    q = round(0.1 * LEVELS) / LEVELS
    assert abs((~keep).double().mean().item() - q) < 6 * (q * (1 - q) / N) ** 0.5
    assert scale == 1 / (1 - q)
    x = torch.ones(N)
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.1), torch.where(keep, torch.tensor(scale, dtype=x.dtype), 0.0))
    assert abs(q - 0.1) < 1e-5


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_every_16_bit_slice_of_a_draw_drops_at_the_rate_and_independently(p):
    # Four elements share one 64-bit draw: a slice with a stuck bit would drop at
    # another rate, and correlated slices would drop together more or less than p^2.
    torch.manual_seed(1)
    dropped = (~keep_mask((N // 4, 4), p)[0]).double()
    sd = (p * (1 - p) * 4 / N) ** 0.5
    for slot in range(4):
        assert abs(dropped[:, slot].mean().item() - p) < 6 * sd
    both = (dropped[:, :-1] * dropped[:, 1:]).mean().item()
    assert abs(both - p * p) < 6 * (p * p * (1 - p * p) / (3 * N // 4)) ** 0.5


def test_gradient_is_the_same_mask_and_expectation_is_kept():
    torch.manual_seed(2)
    x = torch.randn(64, 1024, requires_grad=True)
    y = dropout(x, 0.3)
    y.backward(torch.ones_like(y))
    mask = x.grad
    assert torch.allclose(y, x.detach() * mask)
    scale = torch.tensor(LEVELS / (LEVELS - round(0.3 * LEVELS)), dtype=torch.float32)
    assert torch.equal(torch.unique(mask), torch.stack([torch.tensor(0.0), scale]))
    assert abs(mask.mean().item() - 1.0) < 0.02


def test_the_global_seed_fixes_the_mask():
    x = torch.ones(4096)
    torch.manual_seed(3)
    a = dropout(x, 0.1)
    torch.manual_seed(3)
    b = dropout(x, 0.1)
    torch.manual_seed(4)
    c = dropout(x, 0.1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eval_mode_zero_and_one_behave_as_torchs():
    x = torch.randn(8, 16)
    layer = Dropout(0.1).eval()
    assert layer(x) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    assert isinstance(layer, torch.nn.Dropout)  # set_dropout and state dicts see nn.Dropout
    with pytest.raises(ValueError):
        dropout(x, 1.5)


def test_bfloat16_products_are_rounded_once_as_torchs():
    x = torch.randn(256, 256, dtype=torch.bfloat16)
    torch.manual_seed(7)
    y = dropout(x, 0.1)
    torch.manual_seed(7)
    keep, scale = keep_mask(x.shape, 0.1)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, torch.where(keep, (x.float() * scale).bfloat16(), 0.0))


def test_attention_path_equals_sdpa_when_nothing_is_dropped():
    torch.manual_seed(5)
    cfg = VLPConfig(vocab_size=200, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                    intermediate_size=64, max_regions=4)
    n, m = torch.tensor([4, 2, 0]), torch.tensor([3, 5, 1])
    mask = build_layout(n, m, 4, 5, torch.tensor([True, False, True]), cfg).mask
    q, k, v = (torch.randn(3, 4, 11, 8) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    # A rate below 1/65536 drops nothing and scales by 1: the plain attention remains.
    got = attention_with_dropout(q, k, v, scores_bias(mask, 3, 4, 11, torch.float32), 1e-6)
    assert torch.allclose(got, expected, atol=1e-6)


def test_attention_probabilities_are_dropped_at_the_rate():
    torch.manual_seed(6)
    q = k = torch.zeros(256, 4, 64, 8)  # uniform attention over 64 keys
    v = torch.ones(256, 4, 64, 8)
    mask = torch.ones(1, 1, 64, 64, dtype=torch.bool)
    out = attention_with_dropout(q, k, v, scores_bias(mask, 256, 4, 64, torch.float32), 0.25)
    kept = out[..., 0] * (1 - round(0.25 * LEVELS) / LEVELS) * 64  # kept keys per query
    assert torch.allclose(kept, kept.round(), atol=1e-3)
    assert abs(kept.mean().item() / 64 - 0.75) < 0.005


def test_weights_are_the_masks_draw_and_dropout_add_is_dropout_plus_residual():
    torch.manual_seed(8)
    keep, scale = keep_mask((512, 64), 0.1)
    torch.manual_seed(8)
    weights, same = keep_weights((512, 64), 0.1, torch.float32)
    assert same == scale and torch.equal(weights, keep.float())
    x, residual = torch.randn(512, 64), torch.randn(512, 64)
    torch.manual_seed(9)
    expected = dropout(x, 0.1) + residual
    torch.manual_seed(9)
    assert torch.allclose(dropout_add(x, residual, 0.1), expected, atol=1e-6)
    assert torch.equal(dropout_add(x, residual, 0.1, training=False), x + residual)


def test_a_row_with_no_visible_key_stays_finite():
    q = k = v = torch.randn(2, 1, 3, 4)
    mask = torch.tensor([True, True, False])[None, None, None, :].expand(2, 1, 3, 3).clone()
    mask[1] = False
    out = attention_with_dropout(q, k, v, scores_bias(mask, 2, 1, 3, torch.float32), 0.1)
    assert torch.isfinite(out).all()
