"""`vlp train` / `python -m vlp.run_img2txt_dist`: flags in, a trained checkpoint out."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vlp import precision as amp
from vlp.data.sampler import ResumableSampler
from vlp.data.sources import keep_present, open_features
from vlp.errors import VLPError
from vlp.flags import run_script
from vlp.train import checkpoint, distributed, multitask, optim, setup, sharded, task_data
from vlp.train.args import build_parser, check
from vlp.train.log import MetricsLog, text_logger
from vlp.train.loop import LoopSettings, Trainer
from vlp.train.tasks import freeze_unused


def main(argv: list[str] | None = None, prog: str = "vlp train") -> int:
    """Parse VLP's flags and train; expected errors print one line and return 2."""
    return run_script(build_parser(prog), lambda args: train(check(args)), argv)


def train(args) -> dict:
    info = distributed.from_env_or_flags(args.local_rank, args.global_rank, args.world_size,
                                         args.dist_url)
    device = distributed.device_for(info, args.no_cuda)
    output_dir = Path(args.output_dir)
    distributed.init(info, device, args.dist_timeout, alone=args.fsdp)
    finished = False
    try:
        result = _train(args, info, device, output_dir)
        finished = True
        return result
    finally:
        distributed.shutdown(info, finished)


def _train(args, info, device, output_dir: Path) -> dict:
    trainer = prepare(args, info, device, output_dir)
    try:
        final = trainer.train()
    finally:
        trainer.metrics.close()
    trainer.say(f"done: step {final.step}, {final.samples} samples, "
                f"{final.nonfinite_skipped} non-finite batches skipped")
    return {"position": final, "output_dir": output_dir, "steps": trainer.s.total_steps}


def prepare(args, info, device, output_dir: Path) -> Trainer:
    """Everything a run needs, resumed from the newest checkpoint in output_dir if any."""
    output_dir.mkdir(parents=True, exist_ok=True)
    logger = text_logger(output_dir, args.log_file, info.rank)
    say = _printer(info, logger)
    if args.deterministic:
        if device.type == "cuda":
            # cuBLAS refuses deterministic mode without a fixed workspace; this must be set
            # before its first matrix product, which comes later in the run.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if info.is_main:
        checkpoint.clean_partial(output_dir)
        flags = {k: v for k, v in vars(args).items() if not callable(v)}
        (output_dir / "opt.json").write_text(json.dumps(flags, indent=2, sort_keys=True) + "\n")

    resume = checkpoint.newest(output_dir)
    position, training = checkpoint.Position(), None
    run_shape = {"world_size": info.world_size, "train_batch_size": args.train_batch_size,
                 "gradient_accumulation_steps": args.gradient_accumulation_steps,
                 "fsdp": args.fsdp, "task_batch_sizes": args.task_batch_sizes or {}}
    if resume is not None:
        position, saved_shape = checkpoint.read_position(resume)
        checkpoint.check_shape(resume, saved_shape, run_shape)
        # A finished run has nothing to continue: its checkpoint may be weights only.
        if not _finished(args, position):
            training = checkpoint.load_training(resume)
        say(f"resuming from {resume} (step {position.step}, epoch {position.epoch})")

    store = open_features(args)
    tasks = [task_data.make(one) for one in multitask.task_args(args)]
    for part in tasks:
        keys = (c.image_key for c in part.load())
        part.keep(keep_present(keys, store, args.skip_missing_features, say))
        if not part.captions:
            raise VLPError(f"--tasks {part.name}: no {part.noun} left with features in the store")
    dims = setup.region_dims(store, tasks[0].captions[0].image_key)
    setup.seed_everything(args.seed)
    model = setup.build_model(args, dims, resume)
    for part in tasks:
        model = part.grow(model, resume or args.model_recover_path, output_dir, info, say)
    extra_files = [f for part in tasks for f in part.extra_files]
    tok_dir = setup.tokenizer_dir(args, resume)
    setup.check_vocabulary(tok_dir, resume or args.model_recover_path)
    several = len(tasks) > 1
    datasets, caption_tokens = [], None
    for part in tasks:
        # Each task of a multi-task run keeps its token cache apart.
        cache = output_dir / "cache" / part.name if several else None
        tokens, tokenizer = setup.tokenize_captions(part.args, part.captions, tok_dir,
                                                    info.is_main, distributed.barrier, cache)
        if len(tokenizer) > model.config.vocab_size:
            raise VLPError(f"the tokenizer in {tok_dir} has {len(tokenizer)} tokens, the "
                           f"model's vocabulary {model.config.vocab_size}: they do not "
                           "belong together")
        datasets.append(part.dataset(tokens, store, model.config, cache))
        if part.name == "img2txt":
            caption_tokens = tokens
    model = setup.with_output_vocab(model, args, caption_tokens)

    micro = args.train_batch_size // args.gradient_accumulation_steps
    loader_options = dict(num_workers=args.num_workers, pin_memory=device.type == "cuda",
                          generator=torch.Generator(), worker_init_fn=setup.seed_worker,
                          persistent_workers=False,
                          prefetch_factor=4 if args.num_workers else None)
    if several:
        dataset = multitask.MultiTaskDataset([p.name for p in tasks], datasets)
        task_micro = [args.task_batch_sizes.get(p.name, args.train_batch_size)
                      // args.gradient_accumulation_steps for p in tasks]
        sampler = multitask.TaskBatches(dataset.sizes, micro, info.world_size, info.rank,
                                        args.seed, args.task_weights, task_micro)
        collate = multitask.TaskCollate({p.name: p.collate(model.config) for p in tasks})
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, **loader_options)
        batches = sum(sampler.per_task())
    else:
        dataset = datasets[0]
        sampler = ResumableSampler(dataset, info.world_size, info.rank, seed=args.seed)
        loader = DataLoader(dataset, batch_size=micro, sampler=sampler,
                            collate_fn=tasks[0].collate(model.config), **loader_options)
        batches = math.ceil(sampler.num_samples / micro)
    steps_per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
    total = args.max_steps or steps_per_epoch * args.num_train_epochs

    modules = {p.name: p.module(model, tokenizer, output_dir, info) for p in tasks}
    if several:
        lr_scales = {n: lr / args.learning_rate for n, lr in args.task_learning_rates.items()}
        task = multitask.MultiTask(model, modules, args.task_drop_probs, lr_scales)
    else:
        task = modules[tasks[0].name]
    task = task.to(device)
    freeze_unused(task)
    if args.amp and not args.fp16:
        say("--amp without --fp16 trains in float32, as in VLP; --fp16 or --bf16 turn mixed "
            "precision on")
    precision = amp.choose(args.bf16, args.fp16, device)
    wrapped = task
    if args.fsdp:
        wrapped = sharded.shard(task, precision, distributed.mesh(info, device))
    elif info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # A multi-task step reaches one task's head: DDP must not wait for the others.
        wrapped = DistributedDataParallel(
            task, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=several)
    heads = tuple(p.new_head for p in tasks if p.new_head)
    optimizer = optim.build(args.optimizer, task, args.learning_rate, args.weight_decay,
                            args.max_grad_norm, head=heads or None,
                            head_lr=args.head_learning_rate, fp16=args.fp16)
    settings = LoopSettings(
        epochs=args.num_train_epochs, total_steps=total, max_steps=args.max_steps,
        accumulation=args.gradient_accumulation_steps, micro_batch=micro,
        max_grad_norm=args.max_grad_norm if args.optimizer == "adamw" else 0.0,
        save_steps=args.save_steps,
        keep_steps=args.keep_step_checkpoints, log_steps=args.log_steps,
        skip_nonfinite=args.skip_nonfinite, progress=not args.no_progress, run_shape=run_shape,
        extra_files=extra_files, fsdp=args.fsdp, keep_epochs=args.keep_checkpoints)
    metrics = MetricsLog(output_dir, Path(args.log_dir) if args.log_dir else output_dir / "tb",
                         info.is_main)
    trainer = Trainer(task, wrapped, optimizer,
                      optim.scheduler(optimizer, total, args.warmup_proportion, args.sche_mode),
                      amp.grad_scaler(precision, device, args.loss_scale), precision, device,
                      loader, sampler, dataset, settings, info, output_dir, tok_dir, logger,
                      metrics, position, args.seed, say)
    # Each rank's dropout stream is its own; resumed runs restore it from the checkpoint.
    setup.seed_everything(args.seed + info.rank)
    if training is not None:
        trainer.load(training, resume)
    metrics.drop_after(position.step)
    what = ", ".join(f"{len(d)} {p.noun}" + (f" ({p.name})" if several else "")
                     for p, d in zip(tasks, datasets))
    images = len({c.image_key for p in tasks for c in p.captions})
    say(f"{what} of {images} images; "
        f"{info.world_size} process(es) x batch {args.train_batch_size}; {total} steps; "
        f"precision {precision}; device {device}" + ("; FSDP" if args.fsdp else ""))
    return trainer


def _finished(args, position: checkpoint.Position) -> bool:
    """Whether a run at `position` has no step left (Trainer.finished, from the flags)."""
    if args.max_steps and position.step >= args.max_steps:
        return True
    return position.epoch > args.num_train_epochs


def _printer(info, logger):
    def say(message: str) -> None:
        logger.info(message)
        if info.is_main:
            print(message, flush=True)

    return say
