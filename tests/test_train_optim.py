"""Optimisation pieces: no-decay groups, VLP's schedules, precision choice."""

from __future__ import annotations

import pytest
import torch

from vlp.model import UnifiedVLP, VLPConfig
from vlp.train import optim, precision


def tiny_model():
    return UnifiedVLP(VLPConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=24,
                                max_position_embeddings=32, region_feature_dim=4, cls_token_id=1,
                                sep_token_id=2, mask_token_id=3,
                                region_hidden_size=4, region_classes=2, max_regions=4))


def test_weight_decay_flag_reaches_every_weight_but_biases_and_layernorm():
    model = tiny_model()
    opt = optim.adamw(model, lr=1e-3, weight_decay=0.05)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(not n.endswith("bias") and "LayerNorm" not in n
               for n in (names[id(p)] for p in decay["params"]))
    assert all(n.endswith("bias") or "LayerNorm" in n
               for n in (names[id(p)] for p in no_decay["params"]))
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def vlp_warmup_linear(x, warmup=0.002):
    # pytorch_pretrained_bert.optimization.warmup_linear as VLP called it.
    if x < warmup:
        return x / warmup
    return max((x - 1.0) / (warmup - 1.0), 0)


@pytest.mark.parametrize("step", [0, 5, 10, 11, 50, 99, 100, 120])
def test_warmup_linear_matches_vlp(step):
    assert optim.lr_factor(step, 100, 0.1) == pytest.approx(vlp_warmup_linear(step / 100, 0.1))


def test_scheduler_drives_the_optimizer_lr():
    model = tiny_model()
    opt = optim.adamw(model, lr=2.0, weight_decay=0.0)
    sched = optim.scheduler(opt, 10, 0.2, "warmup_linear")
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:3] == pytest.approx([0.0, 1.0, 2.0])
    assert seen[-1] == pytest.approx(2.0 * (1 - 0.9) / 0.8)


def test_precision_choice():
    cpu = torch.device("cpu")
    assert precision.choose(True, False, cpu) == "bf16"
    with pytest.warns(UserWarning, match="needs CUDA"):
        assert precision.choose(False, True, cpu) == "fp32"
    assert not precision.grad_scaler("bf16", cpu).is_enabled()
    with precision.autocast("bf16", cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
