"""SCST cost: the CIDEr-D reward of a batch next to the whole SCST step, in one run.

A batch of 64 images x 5 sampled captions (mean baseline) on a MiniLM-size model (L6
H384, 12 regions, captions up to 20 tokens): the reward (Java-free tokenizing + CIDEr-D
against 5 references per image, document frequencies precomputed) and the full step
(sampling with the K/V cache in train mode, reward, backward). Target: reward <= 10%.

    python bench/scst.py [--images 64 --samples 5 --length 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import BertTokenizerFast

from vlp.data.captions import Caption
from vlp.decode import SearchSettings
from vlp.model import UnifiedVLP, VLPConfig
from vlp.train.scst import CiderReward, ScstTask

WORDS = ("a red blue green yellow purple orange small big circle square triangle disk star "
         "left right top bottom corner of the in picture two three above below next to").split()


def vocab_tokenizer(path) -> BertTokenizerFast:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab_file=str(path / "vocab.txt"))


def main() -> None:
    import tempfile
    from pathlib import Path

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--length", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    tokenizer = vocab_tokenizer(Path(tempfile.mkdtemp()) / "vocab")
    keys = [f"im{i}" for i in range(a.images)]
    refs = [Caption(k, k, " ".join(rng.choice(WORDS, rng.integers(6, 14))))
            for k in keys for _ in range(5)]
    reward = CiderReward.from_captions(refs)
    torch.manual_seed(0)
    cfg = VLPConfig(vocab_size=len(tokenizer), hidden_size=384, num_hidden_layers=6,
                    num_attention_heads=12, intermediate_size=1536, region_feature_dim=256,
                    region_hidden_size=256, region_classes=19, max_regions=12, cls_token_id=2,
                    sep_token_id=3, mask_token_id=4)
    model = UnifiedVLP(cfg).train()
    task = ScstTask(model, tokenizer, reward, SearchSettings(eos_id=3, max_length=a.length),
                    baseline="mean", samples=a.samples, recipe="standard")
    inputs = dict(region_features=torch.randn(a.images, 12, 256),
                  region_locations=torch.randn(a.images, 12, 25),
                  num_regions=torch.full((a.images,), 12),
                  text_ids=torch.zeros(a.images, 2, dtype=torch.long),
                  text_lengths=torch.ones(a.images, dtype=torch.long), image_keys=keys)
    samples = [" ".join(rng.choice(WORDS, rng.integers(5, a.length))) for _ in range(a.images * a.samples)]
    sample_keys = [k for k in keys for _ in range(a.samples)]
    reward(sample_keys, samples)
    start = time.perf_counter()
    for _ in range(a.repeats):
        reward(sample_keys, samples)
    reward_s = (time.perf_counter() - start) / a.repeats
    task(**inputs)["loss"].backward()  # warm-up
    start = time.perf_counter()
    for _ in range(a.repeats):
        model.zero_grad()
        out = task(**inputs)
        out["loss"].backward()
    step_s = (time.perf_counter() - start) / a.repeats
    print(f"{a.images} images x {a.samples} samples, max length {a.length}, L6 H384, "
          f"torch threads {torch.get_num_threads()}")
    print(f"  reward (tokenize + CIDEr-D): {1e3 * reward_s:8.1f} ms")
    print(f"  SCST step (sample, reward, backward): {1e3 * step_s:8.1f} ms "
          f"(mean sample length {float(out['sample_len']):.1f})")
    print(f"  reward share of the step: {reward_s / step_s:.3f}  (target <= 0.10)")


if __name__ == "__main__":
    main()
