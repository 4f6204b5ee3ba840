"""`generate`: write a whole ToyWorld directory, atomically and reproducibly."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vlp.data.toyworld import formats
from vlp.data.toyworld.captions import alt_text, describe
from vlp.data.toyworld.formats import MANIFEST, ImageRecord
from vlp.data.toyworld.scene import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, render, sample_scene
from vlp.data.toyworld.vqa import ask, human_answers
from vlp.errors import VLPError

FORMAT_VERSION = 1
_POOLS = {"toy": 0, "cc": 1}  # seeds the per-image streams; never renumber


@dataclass(frozen=True)
class ToyWorldConfig:
    images: int = 1000  # captioned + VQA images (the COCO role)
    pretrain_images: int = 1000  # alt-text images (the Conceptual Captions role)
    size: int = 128
    seed: int = 0
    answer_noise: float = 0.1
    image_format: str = "jpg"

    def __post_init__(self):
        if self.images < 4:
            raise VLPError(f"--images must be at least 4 (one per split), got {self.images}")
        if self.pretrain_images < 0:
            raise VLPError(f"--pretrain-images must be 0 or more, got {self.pretrain_images}")
        if not MIN_IMAGE_SIZE <= self.size <= MAX_IMAGE_SIZE:
            raise VLPError(f"--size {self.size} px cannot hold the objects: use "
                           f"{MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}")
        if not 0.0 <= self.answer_noise <= 1.0:
            raise VLPError(f"--answer-noise must be between 0 and 1, got {self.answer_noise}")
        if self.image_format not in ("jpg", "png"):
            raise VLPError(f"--image-format must be jpg or png, got {self.image_format!r}")


def split_of(n: int, seed: int) -> list[str]:
    """Karpathy-style splits: 10% each val, test, restval (at least 1), the rest train."""
    k = max(1, round(0.1 * n))
    names = ["val"] * k + ["test"] * k + ["restval"] * k
    names += ["train"] * (n - len(names))
    order = np.random.default_rng([seed, 99]).permutation(n)
    return [names[j] for j in np.argsort(order)]


def _records(cfg: ToyWorldConfig, images_dir: Path, pool: str, count: int,
             first_id: int, splits: list[str], progress: bool) -> list[ImageRecord]:
    records = []
    for i in tqdm(range(count), desc=f"toyworld {pool}", unit="img", disable=not progress):
        rng = np.random.default_rng([cfg.seed, _POOLS[pool], i])
        image_id = first_id + i
        shapes = sample_scene(rng, cfg.size)
        name = f"{pool}_{image_id:012d}.{cfg.image_format}"
        image = render(shapes, rng, cfg.size)
        image.save(images_dir / name, **({"quality": 92} if cfg.image_format == "jpg" else {}))
        r = ImageRecord(image_id, name, splits[i], shapes)
        if pool == "toy":
            r.captions = describe(shapes, rng, cfg.size)
            r.questions = [(q, human_answers(q, rng, cfg.answer_noise))
                           for q in ask(shapes, rng, cfg.size)]
        else:
            r.captions = [alt_text(shapes, rng, cfg.size)]
        records.append(r)
    return records


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # json.dumps runs the C encoder; json.dump to a file would stream in pure Python.
    path.write_text(json.dumps(obj, separators=(",", ":")), encoding="utf-8")


def _write_all(cfg: ToyWorldConfig, root: Path, progress: bool) -> dict:
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    toy = _records(cfg, images_dir, "toy", cfg.images, 1, split_of(cfg.images, cfg.seed),
                   progress)
    cc_splits = ["val" if i % 20 == 19 else "train" for i in range(cfg.pretrain_images)]
    cc = _records(cfg, images_dir, "cc", cfg.pretrain_images, cfg.images + 1, cc_splits,
                  progress)
    ann = root / "annotations"
    _write_json(ann / "dataset_toy.json", formats.karpathy(toy, "toyworld"))
    _write_json(ann / "dataset_cc_toy.json", formats.karpathy(cc, "toyworld_cc"))
    for split in ("train", "val"):
        subset = [r for r in toy if formats.DETECTION_SPLIT[r.split] == split]
        _write_json(ann / f"instances_{split}.json",
                    formats.coco_instances(subset, cfg.size, cfg.seed))
    for split in ("train", "val", "test"):
        subset = [r for r in toy if formats.VQA_SPLIT[r.split] == split]
        questions, annotations = formats.vqa(subset, split, cfg.seed)
        _write_json(ann / "vqa" / f"v2_OpenEnded_toy_{split}_questions.json", questions)
        _write_json(ann / "vqa" / f"v2_toy_{split}_annotations.json", annotations)
    _write_json(ann / "scenes_toy.json",
                formats.scenes(toy, "toy") + formats.scenes(cc, "cc"))
    from vlp.data.toyworld.refer import write_refcoco_toy
    write_refcoco_toy(root, seed=cfg.seed, image_size=cfg.size)
    return summarize(toy, cc)


def summarize(toy: list[ImageRecord], cc: list[ImageRecord]) -> dict:
    kinds = Counter(q.kind for r in toy for q, _ in r.questions)
    yes_no = [q.answer for r in toy for q, _ in r.questions if q.answer_type == "yes/no"]
    return {
        "images": dict(sorted(Counter(r.split for r in toy).items())),
        "captions": sum(len(r.captions) for r in toy),
        "pretrain_images": len(cc),
        "objects": sum(len(r.shapes) for r in toy),
        "questions": dict(sorted(kinds.items())),
        "yes_fraction": round(yes_no.count("yes") / max(1, len(yes_no)), 3),
    }


def generate(out: str | os.PathLike, cfg: ToyWorldConfig, overwrite: bool = False,
             progress: bool = True) -> dict:
    """Write ToyWorld to `out`; return its manifest (config, counts, seconds).

    The directory appears complete or not at all: everything is written to a sibling
    temporary directory that is renamed into place at the end. An existing directory
    made with the same settings is kept as it is (the manifest says so).
    """
    out = Path(out)
    existing = _existing_manifest(out, cfg, overwrite)
    if existing is not None:
        return {**existing, "reused": True}
    created = _make_parents(out.parent)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    start = time.perf_counter()
    try:
        _remove_stale_partials(out)
        try:
            tmp.mkdir()
        except OSError as err:
            raise VLPError(f"cannot write --out {out}: {err.strerror}") from None
        summary = _write_all(cfg, tmp, progress)
        from vlp.data.toyworld.preview import contact_sheet
        contact_sheet(tmp).save(tmp / "preview.png")
        manifest = {"format_version": FORMAT_VERSION, "config": asdict(cfg), **summary,
                    "seconds": round(time.perf_counter() - start, 2)}
        _write_json(tmp / MANIFEST, {k: v for k, v in manifest.items() if k != "seconds"})
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            if d.exists() and not any(d.iterdir()):
                d.rmdir()
        raise
    return {**manifest, "reused": False}


def _existing_manifest(out: Path, cfg: ToyWorldConfig, overwrite: bool) -> dict | None:
    if out.exists() and not out.is_dir():
        raise VLPError(f"--out {out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()) or overwrite:
        return None
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        raise VLPError(f"--out {out} already holds other files; choose another directory "
                       f"or pass --overwrite") from None
    old = {**(manifest.get("config") or {}), "format_version": manifest.get("format_version")}
    wanted = {**asdict(cfg), "format_version": FORMAT_VERSION}
    differ = [f"{k} {old.get(k)} (asked {v})" for k, v in wanted.items() if old.get(k) != v]
    if differ:
        raise VLPError(f"--out {out} holds ToyWorld made with other settings: "
                       f"{', '.join(differ)}; pass --overwrite to replace it")
    return manifest


def _make_parents(parent: Path) -> list[Path]:
    """Create `parent` and its missing ancestors; return those created, outermost first."""
    lineage = [parent, *parent.parents]
    blocker = next((p for p in lineage if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise VLPError(f"cannot create --out under {parent}: {blocker} is not a directory")
    missing = [p for p in lineage if not p.exists()][::-1]
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VLPError(f"cannot create --out under {parent}: {err.strerror}") from None
    return missing


def _remove_stale_partials(out: Path) -> None:
    """A run killed with SIGKILL leaves its partial directory; clear those of dead runs."""
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _publish(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
