"""Optimisation pieces: no-decay groups, VLP's schedules, precision choice."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from vlp.model import UnifiedVLP, VLPConfig
from vlp import precision
from vlp.train import optim


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
    # Best of 25: a product this small is timed in microseconds, which a busy machine
    # can stretch by milliseconds in any one try.
    speedup = precision.cpu_bf16_speedup(rows=128, inner=64, cols=128, reps=25)
    assert 0.01 < speedup < 100




def test_bf16_on_a_gpu_without_it_is_an_error_naming_the_gpu(monkeypatch):
    from vlp.errors import VLPError

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100-SXM2-16GB")
    with pytest.raises(VLPError, match="--bf16: Tesla V100-SXM2-16GB has no bfloat16; use --fp16"):
        precision.choose(True, False, torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.choose(True, False, torch.device("cuda", 0)) == "bf16"


# -- BertAdam, VLP's optimizer ----------------------------------------------------------------

def vlp_warmup_constant(x, warmup=0.002):
    if x < warmup:
        return x / warmup
    return 1.0


def vlp_warmup_cosine(x, warmup=0.002):
    # VLP wrote torch.cos, which fails on a float; the value it meant.
    if x < warmup:
        return x / warmup
    return 0.5 * (1.0 + math.cos(math.pi * x))


VLP_SCHEDULES = {"warmup_linear": vlp_warmup_linear, "warmup_constant": vlp_warmup_constant,
                 "warmup_cosine": vlp_warmup_cosine}


class VLPBertAdam(torch.optim.Optimizer):
    """pytorch_pretrained_bert.optimization.BertAdam as VLP ran it (fp32 path), with
    today's spellings of add_/addcmul_."""

    def __init__(self, params, lr, warmup=-1, t_total=-1, schedule="warmup_linear", b1=0.9,
                 b2=0.999, e=1e-6, weight_decay=0.01, max_grad_norm=1.0):
        defaults = dict(lr=lr, schedule=schedule, warmup=warmup, t_total=t_total, b1=b1, b2=b2,
                        e=e, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
        super().__init__(params, defaults)

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["next_m"] = torch.zeros_like(p.data)
                    state["next_v"] = torch.zeros_like(p.data)
                next_m, next_v = state["next_m"], state["next_v"]
                beta1, beta2 = group["b1"], group["b2"]
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                next_m.mul_(beta1).add_(grad, alpha=1 - beta1)
                next_v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = next_m / (next_v.sqrt() + group["e"])
                if group["weight_decay"] > 0.0:
                    update += group["weight_decay"] * p.data
                if group["t_total"] != -1:
                    schedule_fct = VLP_SCHEDULES[group["schedule"]]
                    lr_scheduled = group["lr"] * schedule_fct(state["step"] / group["t_total"],
                                                              group["warmup"])
                else:
                    lr_scheduled = group["lr"]
                update_with_lr = lr_scheduled * update
                p.data.add_(-update_with_lr)
                state["step"] += 1


def vlp_fp16_step(groups, lr, state, max_grad_norm=1.0, eps=1e-8, b1=0.9, b2=0.999):
    """VLP's --fp16 optimizer step at learning rate `lr`: apex's FP16_Optimizer (each
    group's gradients flattened, their norm) driving FusedAdam (bias_correction=False,
    max_grad_norm=1.0, eps 1e-8 outside the square root), its CUDA kernel written out;
    loss scale 1."""
    scale = 1.0
    for group in groups:
        flat = torch.cat([p.grad.flatten() for p in group["params"]])
        grad_norm = float(torch.norm(flat, 2.0))
        combined_scale = scale
        clip = ((grad_norm / scale) + 1e-6) / max_grad_norm
        if clip > 1:
            combined_scale = clip * scale
        for p in group["params"]:
            m, v = state.setdefault(p, (torch.zeros_like(p), torch.zeros_like(p)))
            g = p.grad / combined_scale
            m.copy_(b1 * m + (1 - b1) * g)
            v.copy_(b2 * v + (1 - b2) * g * g)
            denom = torch.sqrt(v) + eps
            update = m / denom + group["weight_decay"] * p
            p.data.copy_(p - lr * update)


def vqa_model():
    return UnifiedVLP(tiny_model().config.replace(vqa_answers=3))


def twin_models():
    torch.manual_seed(0)
    ours, theirs = vqa_model(), vqa_model()
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def set_grads(models, step: int, without: str = "embeddings.token_type_embeddings.weight"):
    """The same gradients in each model, large enough for some tensors to be clipped; the
    parameter `without` never gets one (it is skipped, not decayed)."""
    generator = torch.Generator().manual_seed(step)
    norms = []
    for named in zip(*(m.named_parameters() for m in models)):
        name = named[0][0]
        grad = torch.randn(named[0][1].shape, generator=generator) * (0.02 + 0.002 * (step % 50))
        for _, p in named:
            p.grad = None if name == without else grad.clone()
        if name != without:
            norms.append(float(grad.norm()))
    return norms


@pytest.mark.parametrize("mode, fused", [("warmup_linear", None), ("warmup_linear", False),
                                         ("warmup_constant", None), ("warmup_cosine", None)])
def test_bert_adam_with_the_schedule_is_vlps_bert_adam_over_100_steps(mode, fused):
    ours, theirs = twin_models()
    unclipped_model = vqa_model()
    unclipped_model.load_state_dict(ours.state_dict())
    opt = optim.bert_adam(ours, lr=2e-3, weight_decay=0.01, max_grad_norm=1.0,
                          head="vqa_head.", head_lr=6e-3)
    opt.fused = fused  # None: torch's fused kernel (this torch has it on the CPU)
    sched = optim.scheduler(opt, total_steps=100, warmup=0.1, mode=mode)
    reference, unclipped_reference = (
        VLPBertAdam(optim.param_groups(m, 0.01, 2e-3, "vqa_head.", 6e-3), lr=2e-3,
                    warmup=0.1, t_total=100, schedule=mode, max_grad_norm=clip)
        for m, clip in ((theirs, 1.0), (unclipped_model, -1)))
    assert len(opt.param_groups) == 4  # decay / no decay, at the base rate and the head's
    start = {n: p.detach().clone() for n, p in ours.named_parameters()}
    clipped = unclipped = 0
    for step in range(100):
        norms = set_grads((ours, theirs, unclipped_model), step)
        clipped += sum(n > 1.0 for n in norms)
        unclipped += sum(n < 1.0 for n in norms)
        opt.step()
        sched.step()
        reference.step()
        unclipped_reference.step()
        for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=f"step {step}: {name}")
        assert float(opt.grad_norm) == pytest.approx(math.sqrt(sum(n * n for n in norms)),
                                                     rel=1e-5)
    assert opt.fused is fused  # the kernel ran, or was never tried
    assert clipped > 100 and unclipped > 100
    # Clipping changed the result (Adam is not blind to it: the factor varies by step).
    assert max(float((a - b).detach().abs().max()) for a, b in zip(ours.parameters(),
                                                           unclipped_model.parameters())) > 1e-4
    moved = {n: float((p - start[n]).detach().abs().max()) for n, p in ours.named_parameters()}
    assert moved["embeddings.token_type_embeddings.weight"] == 0.0
    assert min(v for n, v in moved.items() if "token_type" not in n) > 1e-3


def test_bert_adam_weight_decay_reaches_decay_groups_only():
    torch.manual_seed(0)
    model = tiny_model()
    opt = optim.bert_adam(model, lr=0.1, weight_decay=0.5, max_grad_norm=1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # moments stay 0: only the decay moves a weight
    opt.step()
    for name, p in model.named_parameters():
        expected = before[name] if name.endswith("bias") or "LayerNorm" in name \
            else before[name] * (1 - 0.1 * 0.5)
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-7, msg=name)


def test_bert_adam_under_vlps_fp16_flag_is_vlps_fused_adam():
    ours, theirs = twin_models()
    opt = optim.bert_adam(ours, lr=1e-2, weight_decay=0.01, max_grad_norm=1.0, fp16=True)
    sched = optim.scheduler(opt, total_steps=60, warmup=0.1, mode="warmup_linear")
    groups = optim.param_groups(theirs, 0.01, 1e-2)
    state = {}
    for step in range(60):
        set_grads((ours, theirs), step, without="")
        opt.step()
        sched.step()
        # VLP set the rate itself before each step: warmup_linear(global_step / t_total).
        vlp_fp16_step(groups, 1e-2 * vlp_warmup_linear(step / 60, 0.1), state)
        for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=f"step {step}: {name}")
    # Group clipping is not per-tensor clipping: the two part ways at once.
    ours, theirs = twin_models()
    per_tensor = optim.bert_adam(theirs, 1e-2, 0.01, 1.0, fp16=False)
    per_group = optim.bert_adam(ours, 1e-2, 0.01, 1.0, fp16=True)
    set_grads((ours, theirs), 30, without="")
    per_tensor.step()
    per_group.step()
    assert max(float((a - b).detach().abs().max()) for a, b in zip(ours.parameters(),
                                                           theirs.parameters())) > 1e-4


def test_bert_adam_without_clipping_leaves_gradients_alone():
    ours, theirs = twin_models()
    opt = optim.bert_adam(ours, lr=1e-2, weight_decay=0.01, max_grad_norm=0.0)
    reference = VLPBertAdam(optim.param_groups(theirs, 0.01, 1e-2), lr=1e-2, max_grad_norm=-1)
    for step in range(10):
        set_grads((ours, theirs), step)
        opt.step()
        reference.step()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    assert math.isnan(float(opt.grad_norm))


def test_bert_adam_resumed_from_its_saved_state_is_the_uninterrupted_run(tmp_path):
    def run(model, steps, saved=None):
        opt = optim.bert_adam(model, 1e-2, 0.01, 1.0)
        sched = optim.scheduler(opt, 20, 0.1, "warmup_linear")
        if saved is not None:
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
        for step in steps:
            set_grads((model,), step)
            opt.step()
            sched.step()
        return {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}

    straight, resumed = twin_models()
    run(straight, range(20))
    torch.save(run(resumed, range(8)), tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    run(resumed, range(8, 20), saved)
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name


def test_optimizer_choice():
    model = vqa_model()
    adamw = optim.build("adamw", model, 1e-4, 0.05, 1.0, "vqa_head.", 1e-3)
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["eps"] == 1e-6
    assert optim.kind_of(adamw) == "adamw"
    assert [g["lr"] for g in adamw.param_groups] == \
        [g["lr"] for g in optim.adamw(model, 1e-4, 0.05, "vqa_head.", 1e-3).param_groups]
    bert = optim.build("bertadam", model, 1e-4, 0.05, 0.5)
    assert optim.kind_of(bert) == "bertadam"
    assert {(g["eps"], g["clip"], g["max_grad_norm"]) for g in bert.param_groups} == \
        {(1e-6, "tensor", 0.5)}
    assert {g["eps"] for g in optim.build("bertadam", model, 1e-4, 0.05, 1.0,
                                          fp16=True).param_groups} == {1e-8}


def test_a_run_trains_with_bert_adam_and_resumes_only_with_its_own_optimizer(tmp_path, capsys):
    from train_fixtures import make_inputs, train_argv
    from vlp.train.log import read_metrics
    from vlp.train.main import main

    inputs = make_inputs(tmp_path / "in", images=8)
    bert, adamw = tmp_path / "bert", tmp_path / "adamw"
    assert main(train_argv(inputs, bert, "--num_train_epochs", "1", "--log_steps", "1")) == 0
    state = torch.load(bert / "model.1" / "trainer_state.pt", weights_only=True)
    assert state["optimizer_kind"] == "bertadam"
    assert set(state["optimizer"]["state"][0]) == {"next_m", "next_v"}
    # The optimizer clipped each tensor itself; the log still has the gradients' norm.
    assert all(r["grad_norm"] > 0 for r in read_metrics(bert))

    assert main(train_argv(inputs, adamw, "--num_train_epochs", "1",
                           "--optimizer", "adamw")) == 0
    state = torch.load(adamw / "model.1" / "trainer_state.pt", weights_only=True)
    assert state["optimizer_kind"] == "adamw" and "exp_avg" in state["optimizer"]["state"][0]
    capsys.readouterr()
    assert main(train_argv(inputs, adamw, "--num_train_epochs", "2")) == 2
    assert "trained with --optimizer adamw" in capsys.readouterr().err
    # Checkpoints from before the flag carry no name: they were AdamW's.
    del state["optimizer_kind"]
    torch.save(state, adamw / "model.1" / "trainer_state.pt")
    assert main(train_argv(inputs, adamw, "--num_train_epochs", "2")) == 2
    assert "pass --optimizer adamw" in capsys.readouterr().err
    assert main(train_argv(inputs, adamw, "--num_train_epochs", "2", "--optimizer", "adamw")) == 0
    assert (adamw / "model.2").is_dir()
