"""The main job: every stage of the toolkit, end to end, on ToyWorld.

Each stage is a function `(ctx) -> key metric string`; stages run in order, keep their
outputs under `ctx.out`, and skip work whose outputs already exist, so a stopped job
started again goes on where it was. The job ends with one summary table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vlp.data.toyworld import ToyWorldConfig, generate


@dataclass
class Context:
    out: Path
    tiny: bool
    results: dict = field(default_factory=dict)  # what stages hand to later stages
    rows: list[tuple[str, float, str]] = field(default_factory=list)  # stage, s, metric


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context], str]


def toyworld_stage(ctx: Context) -> str:
    cfg = (ToyWorldConfig(images=40, pretrain_images=40) if ctx.tiny
           else ToyWorldConfig(images=2000, pretrain_images=2000))
    manifest = generate(ctx.out / "toyworld", cfg)
    ctx.results["toyworld"] = manifest
    n_questions = sum(manifest["questions"].values())
    kept = " (kept)" if manifest["reused"] else ""
    return (f"{sum(manifest['images'].values())} images, {manifest['captions']} captions, "
            f"{n_questions} questions, {manifest['pretrain_images']} alt-text{kept}")


STAGES = (Stage("toyworld", toyworld_stage),)


def run(out: str | Path, tiny: bool = False, stages=STAGES) -> Context:
    """Run every stage; the context holds their results and (stage, s, metric) rows."""
    ctx = Context(Path(out), tiny)
    for stage in stages:
        start = time.perf_counter()
        metric = stage.run(ctx)
        ctx.rows.append((stage.name, time.perf_counter() - start, metric))
    return ctx


def table(rows: list[tuple[str, float, str]]) -> str:
    width = max(len("stage"), *(len(name) for name, _, _ in rows))
    lines = [f"{'stage':<{width}}  {'time':>8}  key metric", "-" * (width + 30)]
    lines += [f"{name:<{width}}  {seconds:>7.1f}s  {metric}" for name, seconds, metric in rows]
    total = sum(seconds for _, seconds, _ in rows)
    lines += ["-" * (width + 30), f"{'total':<{width}}  {total:>7.1f}s"]
    return "\n".join(lines)
