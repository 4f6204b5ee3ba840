"""The training loop: micro-batches, accumulation, clipping, mixed precision, checkpoints."""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vlp import precision as amp
from vlp.errors import VLPError
from vlp.train import checkpoint, distributed, optim, sharded
from vlp.train.checkpoint import Position


@dataclass
class LoopSettings:
    epochs: int
    total_steps: int           # the schedule's length
    max_steps: int             # 0: run every epoch
    accumulation: int
    micro_batch: int
    max_grad_norm: float       # global-norm clipping here (0: none, or the optimizer clips)
    save_steps: int
    keep_steps: int
    log_steps: int
    skip_nonfinite: bool
    progress: bool
    run_shape: dict
    extra_files: list = field(default_factory=list)  # copied into every checkpoint
    fsdp: bool = False         # `wrapped` is sharded (--fsdp): DCP checkpoints
    keep_epochs: int | None = None  # epoch checkpoints kept (None: every one, as VLP)


class NonFiniteLoss(VLPError):
    pass


@contextlib.contextmanager
def _scaled_lr(optimizer, scale: float):
    """Every group's rate times `scale` for one step (a multi-task step's task rate; the
    mean of its micro-batches' when they are several), then the schedule's again."""
    if scale == 1.0:
        yield
        return
    rates = [g["lr"] for g in optimizer.param_groups]
    for g in optimizer.param_groups:
        g["lr"] *= scale
    try:
        yield
    finally:
        for g, lr in zip(optimizer.param_groups, rates):
            g["lr"] = lr


class Trainer:
    """Runs `task` (a module returning {"loss", ...}) over `loader` until the last epoch
    or `max_steps`; every epoch and every `save_steps` it writes a checkpoint that a rerun
    continues from exactly."""

    def __init__(self, task, wrapped, optimizer, scheduler, scaler, precision: str, device,
                 loader, sampler, dataset, settings: LoopSettings, info, output_dir: Path,
                 tokenizer_dir, logger, metrics, position: Position, seed: int, say=None):
        self.task, self.wrapped = task, wrapped
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.precision, self.device = precision, device
        self.loader, self.sampler, self.dataset = loader, sampler, dataset
        self.s, self.info, self.output_dir = settings, info, Path(output_dir)
        self.tokenizer_dir, self.logger, self.metrics = tokenizer_dir, logger, metrics
        self.pos, self.seed = position, seed
        self.say = say or logger.info  # messages for the person running it
        self._window = _Window()
        self._lr_scales: list[float] = []  # the current step's micro-batches' (multi-task)

    # -- the loop --------------------------------------------------------------------------
    def finished(self) -> bool:
        if self.s.max_steps and self.pos.step >= self.s.max_steps:
            return True
        return self.pos.epoch > self.s.epochs

    def train(self) -> Position:
        self.wrapped.train()
        while not self.finished():
            self._epoch()
        return self.pos

    def _epoch(self) -> None:
        pos, s = self.pos, self.s
        epoch_index = pos.epoch - 1
        self.sampler.set_position(epoch_index, pos.batches * s.micro_batch)
        self.dataset.set_epoch(epoch_index)
        if hasattr(self.task, "set_epoch"):
            self.task.set_epoch(pos.epoch)
        # The loader's own generator (worker seeds) keeps the global RNG, which dropout
        # draws from, untouched by starting an epoch: a resumed run matches bit for bit.
        self.loader.generator.manual_seed(self.seed * 100_003 + epoch_index)
        total = pos.batches + len(self.loader)
        bar = self._bar(total, pos.batches)
        batches = iter(self.loader)
        while pos.batches < total:
            start = time.perf_counter()
            batch = next(batches)
            self._window.wait += time.perf_counter() - start
            last = pos.batches + 1 == total
            boundary = (pos.batches + 1) % s.accumulation == 0 or last
            loss, extra = self._micro_step(batch, sync=boundary)
            pos.batches += 1
            pos.samples += len(batch) * self.info.world_size
            self._window.add(loss, len(batch) * self.info.world_size, extra)
            if boundary:
                stepped = self._optimizer_step()
                if bar is not None:
                    bar.update(total - bar.n if last else s.accumulation)
                if stepped:
                    self._after_step(bar)
                if s.max_steps and pos.step >= s.max_steps:
                    break
        if bar is not None:
            bar.close()
        if pos.batches >= total:
            pos.epoch, pos.batches = pos.epoch + 1, 0
            self.save(self.output_dir / f"model.{pos.epoch - 1}")
        elif s.save_steps == 0 or pos.step % s.save_steps:
            self.save(self.output_dir / f"step.{pos.step}")  # stopped by --max_steps

    def _micro_step(self, batch, sync: bool) -> tuple[float, dict]:
        batch = batch.to(self.device, non_blocking=True)
        if hasattr(self.task, "lr_scale"):
            self._lr_scales.append(self.task.lr_scale(batch))
        no_sync = getattr(self.wrapped, "no_sync", None)
        context = contextlib.nullcontext() if sync or no_sync is None else no_sync()
        if self.s.fsdp:
            sharded.set_gradient_sync(self.wrapped, sync)
        with context:
            with amp.autocast(self.precision, self.device):
                out = self.wrapped(**self.task.inputs(batch))
            loss = out["loss"]
            finite = distributed.all_true(bool(torch.isfinite(loss.detach())), self.device)
            if not finite:
                self._nonfinite(loss, batch)
            self.scaler.scale(loss / self.s.accumulation).backward()
            if not finite:
                self._window.bad = True
        extra = {k: float(v) for k, v in out.items() if k not in ("loss", "mlm_loss")}
        return float(loss.detach()), extra

    def _nonfinite(self, loss, batch) -> None:
        where = (f"step {self.pos.step + 1} (epoch {self.pos.epoch}, batch "
                 f"{self.pos.batches + 1})")
        keys = batch.image_keys
        more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
        message = (f"non-finite loss {float(loss.detach())} at {where} on rank "
                   f"{self.info.rank}; images: {', '.join(map(str, keys[:10]))}{more}")
        if not self.s.skip_nonfinite:
            raise NonFiniteLoss(message + " (--skip_nonfinite skips such batches)")
        self.logger.warning(message + "; skipped")

    def _optimizer_step(self) -> bool:
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        scales, self._lr_scales = self._lr_scales, []
        if self._window.bad:
            # Gradients of a non-finite batch were averaged into every rank: drop them all.
            self.optimizer.zero_grad(set_to_none=True)
            self.pos.nonfinite_skipped += 1
            self._window.bad = False
            return False
        self.scaler.unscale_(self.optimizer)
        if self.s.max_grad_norm > 0:
            self._window.grad_norm = sharded.full_norm(
                torch.nn.utils.clip_grad_norm_(params, self.s.max_grad_norm))
        with _scaled_lr(self.optimizer, sum(scales) / len(scales) if scales else 1.0):
            self.scaler.step(self.optimizer)
        self.scaler.update()
        if isinstance(getattr(self.optimizer, "grad_norm", None), torch.Tensor):
            self._window.grad_norm = sharded.full_norm(self.optimizer.grad_norm)  # BertAdam's
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.pos.step += 1
        return True

    def _after_step(self, bar) -> None:
        step = self.pos.step
        if step and step % self.s.log_steps == 0:
            self._log(bar)
        if self.s.save_steps and step and step % self.s.save_steps == 0:
            self.save(self.output_dir / f"step.{step}")

    def _log(self, bar) -> None:
        values = self._window.summary()
        values.update(lr=self.scheduler.get_last_lr()[0], epoch=self.pos.epoch,
                      samples=self.pos.samples, nonfinite_skipped=self.pos.nonfinite_skipped)
        self.metrics.write(self.pos.step, values)
        self.logger.info("step %d epoch %d loss %.4f lr %.3g samples/s %.1f data wait %.1f%%",
                         self.pos.step, self.pos.epoch, values["loss"], values["lr"],
                         values["samples_per_s"], 100 * values["data_wait_frac"])
        if bar is not None:
            bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{values['lr']:.2e}",
                            samples_s=f"{values['samples_per_s']:.1f}")
        self._window = _Window()

    def _bar(self, total: int, done: int):
        if not (self.s.progress and self.info.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=done, desc=f"epoch {self.pos.epoch}/{self.s.epochs}",
                    unit="batch", dynamic_ncols=True, leave=False)

    # -- checkpoints -------------------------------------------------------------------------
    def training_state(self) -> dict:
        state = {"optimizer_kind": optim.kind_of(self.optimizer),
                 "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(),
                 "rng": distributed.gather_objects(checkpoint.rng_state())}
        if not self.s.fsdp:  # with --fsdp the optimizer state is in the DCP shards
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def save(self, directory: Path) -> None:
        state = self.training_state()  # a collective: every rank takes part
        if self.s.fsdp:
            self._save_shards(directory)
        if self.info.is_main:
            checkpoint.save(directory, self.task.model, self.tokenizer_dir, state, self.pos,
                            self.s.run_shape, self.s.keep_steps, self.s.extra_files,
                            staged=self.s.fsdp, keep_epochs=self.s.keep_epochs)
            self.logger.info("saved %s", directory)
        distributed.barrier()

    def _save_shards(self, directory: Path) -> None:
        staging = checkpoint.staging(directory)
        if self.info.is_main and staging.exists():
            shutil.rmtree(staging)
        distributed.barrier()
        sharded.save(staging, self.task, self.optimizer)

    def load(self, training: dict, directory: Path) -> None:
        # Checkpoints from before --optimizer were all written by AdamW.
        saved, here = training.get("optimizer_kind", "adamw"), optim.kind_of(self.optimizer)
        if saved != here:
            raise VLPError(f"the checkpoint was trained with --optimizer {saved}, this run uses "
                           f"{here}: pass --optimizer {saved} to continue it, or start from its "
                           "weights with --model_recover_path and another --output_dir")
        try:
            if self.s.fsdp:
                sharded.load(directory, self.task, self.optimizer)
            else:
                self.optimizer.load_state_dict(training["optimizer"])
        except ValueError as err:  # parameter groups of another size
            raise VLPError(f"the checkpoint's optimizer state does not fit the parameters "
                           f"trained here ({err}); start from its weights with "
                           "--model_recover_path and another --output_dir") from None
        self.scheduler.load_state_dict(training["scheduler"])
        self.scaler.load_state_dict(training["scaler"])
        rng = training["rng"]
        if len(rng) != self.info.world_size:
            raise VLPError(f"checkpoint holds RNG states of {len(rng)} ranks, this run has "
                           f"{self.info.world_size}")
        checkpoint.set_rng_state(rng[self.info.rank])


class _Window:
    """Figures since the last log line."""

    def __init__(self):
        self.start = time.perf_counter()
        self.wait = 0.0
        self.losses: list[float] = []
        self.extra: dict[str, list[float]] = {}
        self.samples = 0
        self.grad_norm = math.nan
        self.bad = False

    def add(self, loss: float, samples: int, extra: dict) -> None:
        self.losses.append(loss)
        self.samples += samples
        for k, v in extra.items():
            self.extra.setdefault(k, []).append(v)

    def summary(self) -> dict:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        finite = [x for x in self.losses if math.isfinite(x)]
        means = {k: sum(v) / len(v) for k, v in self.extra.items()}
        return {"loss": sum(finite) / max(len(finite), 1), "samples_per_s": self.samples / elapsed,
                "data_wait_frac": self.wait / elapsed, "grad_norm": self.grad_norm, **means}
