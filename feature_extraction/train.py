"""`train_detector`: train the Faster R-CNN on a COCO-format detection set.

The output directory is a detector (`detector.json`, `model.safetensors`) plus
`trainer_state.pt` (optimizer, schedule, scaler, step, RNG; written atomically every
`save_every` steps) and, once finished, `metrics.json`. Running again with the same
directory resumes from the saved step; a finished directory is left as it is.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from feature_extraction.config import CONFIG_NAME, DetectorConfig
from feature_extraction.detector import build_detector, load_weights, save_detector
from feature_extraction.evaluate import category_labels, coco_metrics
from feature_extraction.extract import default_workers
from feature_extraction.images import BadImage, decode_rgb
from vlp.errors import VLPError

STATE_NAME = "trainer_state.pt"
METRICS_NAME = "metrics.json"


@dataclass
class TrainOptions:
    coco: str
    images: str
    out: str
    val_coco: str | None = None
    val_images: str | None = None  # default: `images`
    config: DetectorConfig | None = None  # default: built from the fields below
    backbone: str = "resnet50"
    representation_size: int = 1024
    fpn_channels: int = 256
    min_size: int = 800
    max_size: int = 1333
    epochs: float = 12.0
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 8
    lr: float = 1e-3  # AdamW
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    flip: bool = True
    workers: int | None = None  # decoding processes; None: 0 on the CPU, else 4
    device: str = "cpu"
    amp: bool = False
    seed: int = 0
    save_every: int = 500
    progress: bool = True
    extra: dict = field(default_factory=dict)  # stored in metrics.json


class CocoDetection(torch.utils.data.Dataset):
    """(image float [3, H, W], target {"boxes", "labels"}) from a COCO instances file."""

    def __init__(self, coco_json, image_dir, category_ids: list[int]):
        data = json.loads(Path(coco_json).read_text())
        label = {c: k + 1 for k, c in enumerate(category_ids)}
        boxes: dict[int, list] = {}
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            if a.get("iscrowd", 0) or w < 1 or h < 1:
                continue
            boxes.setdefault(a["image_id"], []).append((x, y, x + w, y + h,
                                                        label[a["category_id"]]))
        self.items = [(str(Path(image_dir) / im["file_name"]), boxes.get(im["id"], []))
                      for im in sorted(data["images"], key=lambda im: im["id"])]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item):
        """item: an index, or (index, flip) to fix the flip (see epoch_order)."""
        i, flip = item if isinstance(item, tuple) else (item, False)
        path, anns = self.items[i]
        try:
            image = torch.from_numpy(decode_rgb(path)).permute(2, 0, 1).float().div_(255)
        except BadImage as err:
            raise VLPError(f"training image {path}: {err}") from None
        t = torch.tensor(anns, dtype=torch.float32).reshape(-1, 5)
        boxes, labels = t[:, :4], t[:, 4].long()
        if flip:
            w = image.shape[-1]
            image = image.flip(-1)
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        return image, {"boxes": boxes, "labels": labels}


def epoch_order(size: int, seed: int, epoch: int, flip: bool) -> list[tuple[int, bool]]:
    """(index, flip) for every example of an epoch, fixed by (seed, epoch): a run resumed
    mid-epoch sees the same examples, flipped the same way, as one never stopped."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(size, generator=g).tolist()
    flips = (torch.rand(size, generator=g) < 0.5).tolist() if flip else [False] * size
    return list(zip(order, flips))


def _collate(batch):
    return tuple(zip(*batch))


def _schedule(warmup: int, total: int):
    """Linear warmup, then cosine decay to 5% of the peak rate."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def train_detector(opts: TrainOptions) -> dict:
    """Train (or resume, or return the metrics of a finished run); returns metrics."""
    out = Path(opts.out)
    if (out / METRICS_NAME).is_file():
        metrics = json.loads((out / METRICS_NAME).read_text())
        if metrics.get("finished"):
            return {**metrics, "checkpoint": str(out), "reused": True}
    start = time.perf_counter()
    category_ids, names = category_labels(opts.coco)
    config = _config(opts, out, ["__background__"] + names)
    device = torch.device(opts.device)
    torch.manual_seed(opts.seed)
    model = build_detector(config).to(device)
    data = CocoDetection(opts.coco, opts.images, category_ids)
    if len(data) == 0:
        raise VLPError(f"--coco {opts.coco} lists no images")
    per_epoch = math.ceil(len(data) / opts.batch_size)
    total = opts.max_steps or max(1, round(opts.epochs * per_epoch))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  _schedule(opts.warmup_steps, total))
    use_amp = opts.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step, spent = _resume(out, model, optimizer, scheduler, scaler)
    if step == 0:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out)
    _fit(model, data, opts, optimizer, scheduler, scaler, device, use_amp, step, total,
         per_epoch, out, config, spent, start)
    seconds = spent + time.perf_counter() - start
    metrics = {"steps": total, "train_seconds": round(seconds, 1), **opts.extra}
    if opts.val_coco:
        metrics.update(coco_metrics(model, opts.val_coco, opts.val_images or opts.images,
                                    {k + 1: c for k, c in enumerate(category_ids)},
                                    device=device, progress=opts.progress))
    metrics["seconds"] = round(spent + time.perf_counter() - start, 1)
    metrics["finished"] = True
    _write_json(out / METRICS_NAME, metrics)
    return {**metrics, "checkpoint": str(out), "reused": False}


def _config(opts: TrainOptions, out: Path, class_names: list[str]) -> DetectorConfig:
    if (out / STATE_NAME).is_file() and (out / CONFIG_NAME).is_file():
        return DetectorConfig.load(out)  # resuming: the saved config wins
    if opts.config is not None:
        if opts.config.num_classes != len(class_names):
            raise VLPError(f"detector config has {opts.config.num_classes} classes, "
                           f"{opts.coco} has {len(class_names) - 1} + background")
        return replace(opts.config, class_names=class_names)  # the COCO file names them
    return DetectorConfig(backbone=opts.backbone, num_classes=len(class_names),
                          class_names=class_names,
                          representation_size=opts.representation_size,
                          fpn_channels=opts.fpn_channels, min_size=opts.min_size,
                          max_size=opts.max_size, norm="batch")


def _fit(model, data, opts, optimizer, scheduler, scaler, device, use_amp, step, total,
         per_epoch, out, config, spent, start) -> None:
    from tqdm import tqdm

    model.train()
    bar = tqdm(total=total, initial=step, desc="train-detector", unit="step",
               disable=not opts.progress)
    while step < total:
        epoch, skip = divmod(step, per_epoch)
        order = epoch_order(len(data), opts.seed, epoch, opts.flip)[skip * opts.batch_size:]
        # Its own generator, so that making the loader draws nothing from the global RNG
        # (which the detector's box sampling uses, and which a checkpoint restores).
        loader = torch.utils.data.DataLoader(
            data, batch_size=opts.batch_size, sampler=order, collate_fn=_collate,
            num_workers=default_workers(device) if opts.workers is None else opts.workers,
            generator=torch.Generator().manual_seed(epoch))
        for images, targets in loader:
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            with _autocast(use_amp):
                losses = model(images, targets)
            loss = sum(losses.values())
            value = loss.item()
            if not math.isfinite(value):
                raise VLPError(f"detector loss became {value} at step {step}; "
                               f"lower --lr (now {opts.lr})")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
            if step % opts.save_every == 0 or step == total:
                _save(out, model, config, optimizer, scheduler, scaler, step,
                      spent + time.perf_counter() - start)
            if step >= total:
                break
    bar.close()
    model.eval()


def _autocast(enabled: bool):
    """float16 autocast on CUDA, or nothing (no CUDA-on-CPU warnings)."""
    import contextlib

    return torch.autocast("cuda", dtype=torch.float16) if enabled \
        else contextlib.nullcontext()


def _save(out, model, config, optimizer, scheduler, scaler, step, seconds) -> None:
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict(), "step": step, "seconds": seconds,
             "rng": torch.get_rng_state()}
    tmp = out / (STATE_NAME + ".tmp")
    torch.save(state, tmp)
    save_detector(model, config, out)
    tmp.replace(out / STATE_NAME)


def _resume(out: Path, model, optimizer, scheduler, scaler) -> tuple[int, float]:
    path = out / STATE_NAME
    if not path.is_file():
        return 0, 0.0
    from safetensors.torch import load_file

    state = torch.load(path, map_location="cpu", weights_only=True)
    load_weights(model, load_file(str(out / "model.safetensors")), out)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    return int(state["step"]), float(state["seconds"])


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)
