"""Is data loading ever the bottleneck? The full training loop with the real loader and
region store, next to the same loop fed batches already in memory, in one run.

Both sides run `vlp.train` end to end (same model, flags, optimizer, logging and final
checkpoint); the only difference is where batches come from: DataLoader workers reading
the LMDB store, tokens and box vectors, or a list of the same batches collated
beforehand. Rounds alternate to share the machine's noise. Target: ratio >= 0.95.

    python bench/train_loop.py [--steps 20 --batch 32 --regions 36 --feature-dim 1024
                                --workers 1 --rounds 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from train_fixtures import captions_json, tiny_bert  # noqa: E402

from vlp.data.features import RegionRecord, create_store  # noqa: E402
from vlp.train import distributed  # noqa: E402
from vlp.train.args import build_parser, check  # noqa: E402
from vlp.train.main import prepare  # noqa: E402


def write_store(path: Path, images: int, regions: int, dim: int, classes: int = 19) -> None:
    rng = np.random.default_rng(0)
    with create_store(path) as out:
        for i in range(images):
            x1, y1 = rng.uniform(0, 200, regions), rng.uniform(0, 200, regions)
            boxes = np.stack([x1, y1, x1 + rng.uniform(5, 50, regions),
                              y1 + rng.uniform(5, 50, regions)], 1)
            out.put(f"img_{i:04d}", RegionRecord(
                boxes=boxes, features=rng.standard_normal((regions, dim)),
                cls_probs=rng.dirichlet(np.ones(classes), regions), scores=rng.random(regions),
                image_w=256, image_h=256))


def bert_dir(path: Path, hidden: int, layers: int) -> Path:
    import json

    tiny_bert(path)
    cfg = json.loads((path / "config.json").read_text())
    from transformers import BertConfig, BertModel

    cfg.update(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
               intermediate_size=4 * hidden, max_position_embeddings=128)
    BertModel(BertConfig(**{k: v for k, v in cfg.items() if k != "architectures"})).save_pretrained(path)
    return path


class InMemory(torch.utils.data.Dataset):
    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.batches[i]


def run(argv: list[str], in_memory: bool) -> float:
    args = check(build_parser().parse_args(argv))
    info = distributed.DistInfo()
    trainer = prepare(args, info, torch.device("cpu"), Path(args.output_dir))
    if in_memory:
        trainer.sampler.set_position(0, 0)
        trainer.dataset.set_epoch(0)
        batches = list(trainer.loader)
        trainer.loader = DataLoader(InMemory(batches), batch_size=None, shuffle=False,
                                    generator=torch.Generator())
        trainer.sampler.set_position = lambda epoch, start: None
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.metrics.close()
    return trainer.pos.samples / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--regions", type=int, default=36)
    p.add_argument("--feature-dim", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vlp-bench-loop-"))
    try:
        images = a.steps * a.batch // 2
        src = captions_json(root / "captions.json", images, per_image=2, words=12)
        write_store(root / "regions.lmdb", images, a.regions, a.feature_dim)
        bert = bert_dir(root / "bert", a.hidden, a.layers)
        results = {"store": [], "memory": []}
        for r in range(a.rounds):
            for side in ("store", "memory"):
                out = root / f"{side}{r}"
                argv = ["--output_dir", str(out), "--bert_model", str(bert), "--src_file", str(src),
                        "--features", str(root / "regions.lmdb"), "--do_train", "--split", "train",
                        "--new_segment_ids", "--len_vis_input", str(a.regions), "--max_len_b", "20",
                        "--train_batch_size", str(a.batch), "--num_workers",
                        str(a.workers if side == "store" else 0), "--num_train_epochs", "1",
                        "--s2s_prob", "0.75", "--bi_prob", "0.25", "--no_progress",
                        "--log_steps", "1000"]
                results[side].append(run(argv, side == "memory"))
                shutil.rmtree(out)
        store, memory = max(results["store"]), max(results["memory"])
        print(f"model L{a.layers} H{a.hidden}, batch {a.batch}, {a.regions} regions x "
              f"{a.feature_dim}-d, {a.steps} steps, {a.workers} loader worker(s), "
              f"torch threads {torch.get_num_threads()}")
        print(f"  real loader + LMDB store : {store:8.1f} samples/s  (rounds: "
              f"{', '.join(f'{x:.1f}' for x in results['store'])})")
        print(f"  in-memory batches        : {memory:8.1f} samples/s  (rounds: "
              f"{', '.join(f'{x:.1f}' for x in results['memory'])})")
        print(f"  ratio store / memory     : {store / memory:.3f}  (target >= 0.95)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
