"""BertAdam, the optimizer VLP trained with (pytorch_pretrained_bert's).

Per step, for the parameters that have a gradient, in this order:
  1. clip: each gradient tensor to norm `max_grad_norm` (BertAdam), or each parameter
     group's gradients together (clip="group": apex's FusedAdam, which VLP's --fp16 used);
     g *= max_grad_norm / (norm + 1e-6) where that is below 1;
  2. m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2   (no bias correction);
  3. p -= lr * (m / (sqrt(v) + eps) + weight_decay * p).
`lr` is the group's learning rate as it stands: VLP's schedule factor schedule(k / t_total)
for the k-th update (k from 0) is the LambdaLR's (vlp.train.optim.scheduler), which gives
optimizer step k the same factor.

Steps 2-3 run in torch's fused AdamW kernel where it has one for the parameters (CPU,
CUDA): its bias corrections 1 - beta**step are exactly 1 at step +inf, which leaves
BertAdam's update, in one pass over memory instead of six. Elsewhere, foreach ops.
"""

from __future__ import annotations

import math

import torch

CLIP_MODES = ("tensor", "group")


class BertAdam(torch.optim.Optimizer):
    """`grad_norm` holds the last step's global norm of the gradients before clipping (a
    0-d tensor; NaN when nothing is clipped) for the training log. `fused`: None uses the
    fused kernel where it runs, False never (the foreach ops), True always."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, max_grad_norm: float = 1.0,
                 clip: str = "tensor", fused: bool | None = None):
        if lr < 0.0 or eps < 0.0 or weight_decay < 0.0:
            raise ValueError(f"BertAdam: lr {lr}, eps {eps} and weight_decay {weight_decay} "
                             "must be >= 0")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"BertAdam: betas {betas} must be in [0, 1)")
        if clip not in CLIP_MODES:
            raise ValueError(f"BertAdam: clip {clip!r} is not one of {CLIP_MODES}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm, clip=clip)
        super().__init__(params, defaults)
        self.grad_norm = torch.tensor(math.nan)
        self.fused = fused
        self._endless: dict[torch.device, torch.Tensor] = {}  # step +inf, per device
        self._kernel: dict[tuple, bool] = {}  # (device, dtype) -> the fused kernel runs

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        norms = []
        for group in self.param_groups:
            # BertAdam skipped a parameter without a gradient, its moments untouched.
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError("BertAdam needs dense gradients")
            if group["max_grad_norm"] > 0:
                norms.append(_clip(grads, group["max_grad_norm"], group["clip"]))
            self._update(params, grads, [self._moments(p) for p in params], group)
        if norms:
            self.grad_norm = torch.linalg.vector_norm(torch.cat(norms))
        return loss

    def _moments(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.state[p]
        if not state:
            # BertAdam's names for the moving averages of g and g^2.
            state["next_m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["next_v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["next_m"], state["next_v"]

    def _update(self, params, grads, moments, group: dict) -> None:
        m = [pair[0] for pair in moments]
        v = [pair[1] for pair in moments]
        if self.fused is not False and self._kernel_runs(params[0]):
            self._fused_update(params, grads, m, v, group)
            return
        if self.fused:
            raise RuntimeError(f"BertAdam(fused=True): no fused Adam kernel for "
                               f"{params[0].dtype} on {params[0].device}")
        _foreach_update(params, grads, m, v, group)

    def _kernel_runs(self, like: torch.Tensor) -> bool:
        """Whether torch's fused kernel takes tensors like `like` (tried once per device
        and dtype on a scratch tensor, so a refusal never leaves a half-done step)."""
        key = (like.device, like.dtype)
        if key not in self._kernel:
            x = [torch.zeros(1, device=like.device, dtype=like.dtype) for _ in range(4)]
            step = torch.tensor(math.inf, device=like.device)
            try:
                torch._fused_adamw_(x[:1], x[1:2], x[2:3], x[3:], [], [step], lr=0.0,
                                    beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-6,
                                    amsgrad=False, maximize=False)
                self._kernel[key] = True
            # No kernel for this device or dtype, or a torch whose private kernel has
            # another signature: the foreach ops give the same update.
            except (RuntimeError, TypeError, AttributeError):
                self._kernel[key] = False
        return self._kernel[key]

    def _fused_update(self, params, grads, m, v, group: dict) -> None:
        device = params[0].device
        if device not in self._endless:
            self._endless[device] = torch.tensor(math.inf, device=device)
        beta1, beta2 = group["betas"]
        # The decay outside the kernel, whose own scales p by 1 - lr * decay rounded to
        # float32: off by several percent of the decay at BERT's rates, the same way every step.
        _decay(params, group["lr"], group["weight_decay"])
        # The kernel only reads the step counts (torch's AdamW advances them itself).
        torch._fused_adamw_(params, grads, m, v, [], [self._endless[device]] * len(params),
                            lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=0.0,
                            eps=group["eps"], amsgrad=False, maximize=False)


def _clip(grads: list[torch.Tensor], max_norm: float, mode: str) -> torch.Tensor:
    """Scale `grads` in place as torch's clip_grad_norm_(max_norm) on each tensor (mode
    "tensor") or on all of them (mode "group"); returns the per-tensor norms before."""
    norms = torch.stack(torch._foreach_norm(grads)).float()
    if mode == "group":
        scale = (max_norm / (torch.linalg.vector_norm(norms) + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, scale.to(grads[0].dtype))
    else:
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0).to(grads[0].dtype)
        torch._foreach_mul_(grads, list(scale.unbind()))
    return norms


def _foreach_update(params, grads, m, v, group: dict) -> None:
    beta1, beta2 = group["betas"]
    lr, decay = group["lr"], group["weight_decay"]
    torch._foreach_mul_(m, beta1)
    torch._foreach_add_(m, grads, alpha=1.0 - beta1)
    torch._foreach_mul_(v, beta2)
    torch._foreach_addcmul_(v, grads, grads, value=1.0 - beta2)
    denom = torch._foreach_sqrt(v)
    torch._foreach_add_(denom, group["eps"])
    # p - lr * (m / denom + decay * p), as two in-place steps (one buffer, not two).
    _decay(params, lr, decay)
    torch._foreach_addcdiv_(params, m, denom, value=-lr)


def _decay(params, lr: float, decay: float) -> None:
    """p -= lr * decay * p, the decrement computed as such (BertAdam's decoupled decay)."""
    if decay > 0.0:
        torch._foreach_add_(params, params, alpha=-lr * decay)
