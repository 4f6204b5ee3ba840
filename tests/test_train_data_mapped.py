"""Training data at Conceptual Captions scale: the dataset's tokens, image keys and VQA
targets are mapped from output_dir/cache, so a DataLoader worker (forked or spawned)
shares them instead of holding a copy."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from train_fixtures import captions_json, make_inputs, train_argv
from vlp.data.features import open_store
from vlp.data.region_text import collate
from vlp.data.tokens import cache_key, cached_tokenize, load_tokenizer, tokenize
from vlp.train import setup
from vlp.train.args import build_parser, check


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"), images=6)


def training_dataset(inputs, out: Path, src: Path | None = None, targets=None):
    """The dataset as `vlp train` builds it (load_captions, tokenize_captions, build_dataset)."""
    args = check(build_parser().parse_args(train_argv(inputs, out)))
    if src is not None:
        args.src_file = [str(src)]
    captions = setup.load_captions(args)
    tokens, tok = setup.tokenize_captions(args, captions, Path(inputs["bert"]), True, lambda: None)
    config = SimpleNamespace(sep_token_id=tok.sep_token_id, vocab_size=len(tok),
                             region_box_octaves=None)
    return setup.build_dataset(args, tokens, captions, open_store(inputs["features"]), config,
                               targets)


def test_dataset_pickles_as_paths_whatever_the_number_of_captions(inputs, tmp_path):
    small = training_dataset(inputs, tmp_path / "a")
    big = training_dataset(inputs, tmp_path / "b", captions_json(tmp_path / "big.json", 2000,
                                                                 per_image=5))
    assert (len(small), len(big)) == (12, 10000)
    sizes = [len(pickle.dumps(ds)) for ds in (small, big)]
    assert abs(sizes[1] - sizes[0]) < 64 and sizes[1] < 4096, sizes
    again = pickle.loads(pickle.dumps(big))
    assert [again.image_keys[i] for i in (0, 4, 5, 9999)] == \
        ["img_0000", "img_0000", "img_0001", "img_1999"]
    assert np.array_equal(again.tokens.ids, big.tokens.ids)


def test_vqa_targets_read_back_exactly(inputs, tmp_path):
    targets = [{i % 3: 1.0, 7: 0.3} if i % 4 else {} for i in range(12)]
    ds = training_dataset(inputs, tmp_path / "a", targets=targets)
    again = pickle.loads(pickle.dumps(ds))
    assert [again[i]["target"] for i in range(12)] == targets
    assert len(pickle.dumps(ds)) < 4096


def test_spawned_worker_yields_the_examples_of_the_main_process(inputs, tmp_path):
    ds = training_dataset(inputs, tmp_path / "a")
    ds.set_epoch(2)
    loader = DataLoader(ds, batch_size=5, num_workers=1, collate_fn=collate,
                        multiprocessing_context="spawn")
    got = list(loader)
    assert [len(b) for b in got] == [5, 5, 2]
    for start, batch in zip(range(0, 12, 5), got):
        want = collate([ds[i] for i in range(start, min(start + 5, 12))])
        assert batch.image_keys == want.image_keys
        for name, value in vars(want).items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(getattr(batch, name), value), name


def test_tokens_cached_as_npz_by_earlier_versions_are_still_read(inputs, tmp_path):
    tok = load_tokenizer(inputs["bert"])
    texts = ["a red circle", "two big squares", "the"]
    old = tokenize(tok, texts)
    np.savez(tmp_path / f"tokens-{cache_key(tok, texts)}.npz", ids=old.ids, offsets=old.offsets)
    tokens = cached_tokenize(tok, texts, tmp_path)
    assert [tokens[i].tolist() for i in range(3)] == [old[i].tolist() for i in range(3)]
    assert tokens.source is not None and len(pickle.dumps(tokens)) < 512
