"""Optimisation pieces: no-decay groups, VLP's schedules, precision choice."""

from __future__ import annotations

import warnings

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


def test_head_learning_rate_covers_the_answer_classifier_only_and_follows_the_schedule():
    model = UnifiedVLP(tiny_model().config.replace(vqa_answers=3))
    opt = optim.adamw(model, lr=1e-4, weight_decay=0.05, head="vqa_head.", head_lr=1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    by_lr = {}
    for g in opt.param_groups:
        by_lr.setdefault(g["lr"], []).extend(names[id(p)] for p in g["params"])
    assert sorted(by_lr[1e-3]) == sorted(n for n in names.values() if n.startswith("vqa_head."))
    assert len(by_lr[1e-4]) + len(by_lr[1e-3]) == len(names)
    assert {g["weight_decay"] for g in opt.param_groups if g["lr"] == 1e-3} == {0.0, 0.05}
    sched = optim.scheduler(opt, total_steps=10, warmup=0.5, mode="warmup_linear")
    for _ in range(3):
        opt.step()
        sched.step()
    assert sorted(sched.get_last_lr()) == pytest.approx([6e-5, 6e-5, 6e-4, 6e-4])
    # without a head rate the groups are VLP's two, whatever the head is called
    assert len(optim.adamw(model, 1e-4, 0.05, head="vqa_head.").param_groups) == 2


def test_the_fused_update_is_the_per_tensor_update():
    torch.manual_seed(0)
    fused_model, loop_model = tiny_model(), tiny_model()
    loop_model.load_state_dict(fused_model.state_dict())
    start = fused_model.embeddings.word_embeddings.weight.detach().clone()
    fused = optim.adamw(fused_model, lr=1e-2, weight_decay=0.01)
    assert fused.defaults["fused"]  # this torch has the CPU kernel
    loop = torch.optim.AdamW(optim.param_groups(loop_model, 0.01, 1e-2), lr=1e-2,
                             betas=(0.9, 0.999), eps=1e-6, foreach=False)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in fused_model.parameters()]
        for model, opt in ((fused_model, fused), (loop_model, loop)):
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            opt.step()
    for (name, a), b in zip(fused_model.named_parameters(), loop_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert (fused_model.embeddings.word_embeddings.weight - start).abs().mean() > 1e-3  # moved


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


def test_precision_choice(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 6.0)
    assert precision.choose(True, False, cpu) == "bf16"
    with pytest.warns(UserWarning, match="needs CUDA"):
        assert precision.choose(False, True, cpu) == "fp32"
    assert not precision.grad_scaler("bf16", cpu).is_enabled()
    with precision.autocast("bf16", cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_bf16_on_a_cpu_that_multiplies_it_slower_warns(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 0.7)
    with pytest.warns(UserWarning, match="0.70x as fast as float32"):
        assert precision.choose(True, False, cpu) == "bf16"
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 6.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.choose(True, False, cpu) == "bf16"


def test_the_bf16_speedup_is_measured_on_this_cpu():
    speedup = precision.cpu_bf16_speedup(rows=128, inner=64, cols=128, reps=2)
    assert 0.01 < speedup < 100




def test_bf16_on_a_gpu_without_it_is_an_error_naming_the_gpu(monkeypatch):
    from vlp.errors import VLPError

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100-SXM2-16GB")
    with pytest.raises(VLPError, match="--bf16: Tesla V100-SXM2-16GB has no bfloat16; use --fp16"):
        precision.choose(True, False, torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.choose(True, False, torch.device("cuda", 0)) == "bf16"
