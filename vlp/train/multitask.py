"""Several tasks in one run (`vlp train --tasks img2txt,vqa2,refcoco`), as GPV-1 and GiT
train one model on captioning, VQA and localization at once.

Every batch holds examples of one task. An epoch visits each task's examples once, in
batches drawn from a per-task shuffle that is sharded over the ranks as torch's
DistributedSampler shards one dataset. The order of the tasks' batches is drawn from
(seed, epoch) alone, so every rank runs the same task at the same step, and a run resumed
mid-epoch takes exactly the batches an uninterrupted one would. By default the order is a
shuffle of all the batches (each task weighs as its dataset's size); `--task_weights`
draws each step's task by those weights instead, going round a task's batches again when
it has had them all.

One model holds every task's head; a step reaches only its task's head, so under DDP the
others are found unused (`find_unused_parameters`) and get no gradient, as in a run of
that task alone.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from vlp.errors import VLPError

# Each task's shuffle is seeded apart from the others'.
TASK_SEED_STRIDE = 1_000_003


class TaskBatches(Sampler[list[int]]):
    """Batches of indices into MultiTaskDataset (task t's examples at offsets[t] on), each
    of one task, of `task_micro[t]` examples (default `micro`); `set_position(epoch, start)`
    as ResumableSampler's (`start` counts batches times `micro`)."""

    def __init__(self, sizes: Sequence[int], micro: int, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0, weights: Sequence[float] | None = None,
                 task_micro: Sequence[int] | None = None):
        self.sizes, self.micro = list(sizes), micro
        self.task_micro = list(task_micro) if task_micro is not None else [micro] * len(sizes)
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.weights = list(weights) if weights is not None else None
        self.offsets = [sum(self.sizes[:t]) for t in range(len(self.sizes))]
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start // self.micro

    def per_task(self) -> list[int]:
        """Batches of each task in one epoch, on every rank."""
        return [math.ceil(math.ceil(n / self.num_replicas) / m)
                for n, m in zip(self.sizes, self.task_micro)]

    def _shard(self, task: int) -> torch.Tensor:
        """This rank's share of task `task`'s shuffle for this epoch (padded by repeating
        its start to a multiple of the ranks, as DistributedSampler pads)."""
        n = self.sizes[task]
        g = torch.Generator().manual_seed(self.seed + TASK_SEED_STRIDE * task + self.epoch)
        order = torch.randperm(n, generator=g)
        total = math.ceil(n / self.num_replicas) * self.num_replicas
        if total > n:
            order = torch.cat([order, order.repeat(math.ceil((total - n) / n))[:total - n]])
        return order[self.rank:total:self.num_replicas] + self.offsets[task]

    def order(self) -> list[int]:
        """The task of each step of this epoch (the same on every rank)."""
        counts = self.per_task()
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        if self.weights is None:
            labels = torch.cat([torch.full((c,), t) for t, c in enumerate(counts)])
            return labels[torch.randperm(len(labels), generator=g)].tolist()
        weights = torch.tensor(self.weights, dtype=torch.float64)
        return torch.multinomial(weights, sum(counts), replacement=True, generator=g).tolist()

    def plan(self) -> list[list[int]]:
        shards = [self._shard(t) for t in range(len(self.sizes))]
        counts, used = self.per_task(), [0] * len(self.sizes)
        batches = []
        for t in self.order():
            j = used[t] % counts[t]
            used[t] += 1
            m = self.task_micro[t]
            batches.append(shards[t][j * m:(j + 1) * m].tolist())
        return batches

    def __iter__(self):
        return iter(self.plan()[self.start:])

    def __len__(self) -> int:
        return sum(self.per_task()) - self.start


class MultiTaskDataset(Dataset):
    """The tasks' datasets end to end; each example knows its task."""

    def __init__(self, names: Sequence[str], datasets: Sequence[Dataset]):
        self.names, self.datasets = list(names), list(datasets)
        self.sizes = [len(d) for d in self.datasets]
        self.offsets = [sum(self.sizes[:t]) for t in range(len(self.sizes))]

    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            d.set_epoch(epoch)

    def __len__(self) -> int:
        return sum(self.sizes)

    def __getitem__(self, i: int) -> dict:
        t = max(k for k, start in enumerate(self.offsets) if start <= i)
        example = self.datasets[t][i - self.offsets[t]]
        example["task"] = self.names[t]
        return example


class TaskCollate:
    """Collates a one-task batch with that task's collate function and labels it."""

    def __init__(self, collates: dict):
        self.collates = collates

    def __call__(self, examples: list[dict]):
        name = examples[0]["task"]
        if any(e["task"] != name for e in examples):
            raise ValueError("a multi-task batch mixes tasks")
        batch = self.collates[name](examples)
        batch.task = name
        return batch


class MultiTask(nn.Module):
    """The tasks' loss modules over one shared model: a batch goes to its own task's
    module, whose losses come back with the task's name on them (`<task>_loss`) so the
    log shows each task's. `drop_probs` gives a task's batches their own dropout rate;
    `lr_scales` their own learning rate, as a factor on the shared schedule that the
    trainer reads through `lr_scale`."""

    def __init__(self, model: nn.Module, tasks: dict[str, nn.Module],
                 drop_probs: dict[str, float] | None = None,
                 lr_scales: dict[str, float] | None = None):
        super().__init__()
        self.model = model
        self.tasks = nn.ModuleDict(tasks)
        self.heads = tuple(h for t in tasks.values() for h in t.heads)
        self.masks_regions = any(getattr(t, "masks_regions", False) for t in tasks.values())
        base = model.config.hidden_dropout_prob
        self.drop_probs = {name: (drop_probs or {}).get(name, base) for name in tasks}
        self.lr_scales = {name: (lr_scales or {}).get(name, 1.0) for name in tasks}

    def lr_scale(self, batch) -> float:
        return self.lr_scales[batch.task]

    def set_epoch(self, epoch: int) -> None:
        for t in self.tasks.values():
            if hasattr(t, "set_epoch"):
                t.set_epoch(epoch)

    def forward(self, task: str, **inputs) -> dict:
        if self.model.config.hidden_dropout_prob != self.drop_probs[task]:
            self.model.set_dropout(self.drop_probs[task])
        out = self.tasks[task](**inputs)
        return {**out, f"{task}_loss": out["loss"].detach()}

    def inputs(self, batch) -> dict:
        return {"task": batch.task, **self.tasks[batch.task].inputs(batch)}


# --split of a task that gets no "task:SPLIT" entries.
DEFAULT_SPLITS = {"img2txt": ["train", "restval"], "vqa2": [], "refcoco": ["train"]}


def task_names(tasks: str, known) -> list[str]:
    """The tasks a --tasks value names (one, or several joined by commas)."""
    names = [n.strip() for n in tasks.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise VLPError(f"--tasks {tasks}: {', '.join(unknown) or 'no task'} is not one of "
                       f"{', '.join(known)} (several are joined by commas)")
    if len(set(names)) < len(names):
        raise VLPError(f"--tasks {tasks} names a task twice")
    return names


def task_args(args) -> list:
    """One set of flags per task. With several tasks each --src_file is given as
    TASK:FILE and --split entries as TASK:SPLIT (bare ones are the captions'); VQA and
    localization examples are bidirectional with no question token masked, whatever
    --s2s_prob and --max_pred set for the captions."""
    names = args.tasks.split(",")
    if len(names) == 1:
        return [args]
    files = {n: [] for n in names}
    for entry in args.src_file:
        name, sep, path = entry.partition(":")
        if not sep or name not in files:
            raise VLPError(f"--src_file {entry}: with --tasks {args.tasks} each file names its "
                           f"task, as {names[0]}:FILE")
        files[name].append(path)
    splits = {n: [] for n in names}
    for entry in args.split:
        name, sep, split = entry.partition(":")
        if not sep:
            name, split = "img2txt", entry
        if name not in splits:
            if not sep and list(args.split) == DEFAULT_SPLITS["img2txt"]:
                continue  # the caption default, with no caption task here
            raise VLPError(f"--split {entry}: --tasks {args.tasks} has no task {name} "
                           "(give TASK:SPLIT)")
        splits[name].append(split)
    out = []
    for name in names:
        if not files[name]:
            raise VLPError(f"--tasks {args.tasks}: no --src_file for {name} (give {name}:FILE)")
        one = copy.copy(args)
        one.tasks, one.src_file = name, files[name]
        one.split = splits[name] or list(DEFAULT_SPLITS[name])
        if name != "img2txt":
            one.task_s2s_prob, one.mask_vqa_input = 0.0, False
        out.append(one)
    return out
