"""Trainer data: captions, cached tokens, per-example draws, resumable sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train_fixtures import captions_json, make_inputs
from vlp.data.captions import read_captions, read_valid_jpgs
from vlp.data.features import open_store
from vlp.data.region_text import RegionTextDataset, TextSettings, collate, truncate
from vlp.data.sampler import ResumableSampler
from vlp.data.tokens import cached_tokenize, load_tokenizer
from vlp.errors import VLPError


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("data"), images=12)


def dataset(inputs, seed=7, tail=True):
    tok = load_tokenizer(inputs["bert"])
    caps = read_captions([inputs["src"]], ["train"])
    tokens = cached_tokenize(tok, [c.text for c in caps], None)
    text = TextSettings(sep_id=3, vocab_size=len(tok), max_len_b=4, always_truncate_tail=tail,
                        max_pred=3, seed=seed)
    return RegionTextDataset(tokens, [c.image_key for c in caps], open_store(inputs["features"]),
                             8, text)


def test_one_example_per_sentence_keyed_by_file_stem(inputs, tmp_path):
    caps = read_captions([inputs["src"]], ["train"])
    assert len(caps) == 24 and caps[0].image_key == "img_0000" and caps[1].image_key == "img_0000"
    valid = tmp_path / "valid.json"
    valid.write_text(json.dumps(["img_0003.jpg", "img_0005.jpg"]))
    kept = read_captions([inputs["src"]], ["train"], read_valid_jpgs(valid))
    assert sorted({c.image_key for c in kept}) == ["img_0003", "img_0005"]
    with pytest.raises(VLPError, match="no captions in splits"):
        read_captions([inputs["src"]], ["test"])


def test_tokens_are_cached_once_and_reread(inputs, tmp_path):
    tok = load_tokenizer(inputs["bert"])
    texts = ["a red circle", "two big squares", "the"]
    first = cached_tokenize(tok, texts, tmp_path)
    files = list(tmp_path.glob("tokens-*"))
    assert len(files) == 1
    again = cached_tokenize(tok, texts, tmp_path)
    assert [list(first[i]) for i in range(3)] == [list(again[i]) for i in range(3)]
    assert list(first[0]) == tok("a red circle", add_special_tokens=False)["input_ids"]
    cached_tokenize(tok, texts + ["green"], tmp_path)
    assert len(list(tmp_path.glob("tokens-*"))) == 2  # other texts, other cache folder


def test_example_draws_do_not_depend_on_batching(inputs):
    ds = dataset(inputs)
    ds.set_epoch(3)
    whole = collate([ds[i] for i in range(6)])
    halves = [collate([ds[i] for i in range(0, 6, 2)]), collate([ds[i] for i in range(1, 6, 2)])]
    for name in ("s2s_draw", "mask_kind", "mask_coin", "mask_random_ids"):
        got = torch.empty_like(getattr(whole, name))
        got[0::2], got[1::2] = getattr(halves[0], name), getattr(halves[1], name)
        assert torch.equal(got, getattr(whole, name)), name
    ds.set_epoch(4)
    assert not torch.equal(collate([ds[i] for i in range(6)]).s2s_draw, whole.s2s_draw)


def test_batch_layout_padding_and_sep(inputs):
    ds = dataset(inputs)
    b = collate([ds[0], ds[1], ds[2]])
    assert b.text_ids.shape == (3, 5)           # max_len_b 4 words + [SEP]
    assert (b.text_ids[torch.arange(3), b.text_lengths - 1] == 3).all()
    assert b.num_regions.tolist() == [5, 5, 4] and b.region_features.shape == (3, 5, 12)
    assert b.region_locations.shape == (3, 5, 4 + 6)
    assert (b.mask_order[b.text_ids == 0] == 2.0).all()
    assert b.image_keys == ["img_0000", "img_0000", "img_0001"]


def test_truncation_tail_or_random_ends():
    ids = np.arange(10)
    rng = np.random.default_rng(0)
    assert truncate(ids, 4, True, rng).tolist() == [0, 1, 2, 3]
    starts = {int(truncate(ids, 4, False, np.random.default_rng(s))[0]) for s in range(50)}
    assert starts - {0, 6} and all(0 <= s <= 6 for s in starts)  # head and tail both cut
    assert truncate(ids[:3], 4, False, rng).tolist() == [0, 1, 2]


def test_sampler_resumes_mid_epoch_with_the_same_order():
    data = list(range(23))
    full = ResumableSampler(data, num_replicas=2, rank=1, seed=5)
    full.set_position(2, 0)
    order = list(full)
    part = ResumableSampler(data, num_replicas=2, rank=1, seed=5)
    part.set_position(2, 4)
    assert list(part) == order[4:] and len(part) == len(order) - 4
    ranks = [ResumableSampler(data, num_replicas=2, rank=r, seed=5) for r in (0, 1)]
    for s in ranks:
        s.set_position(2, 0)
    assert set(list(ranks[0]) + list(ranks[1])) == set(data)


@pytest.mark.parametrize("n, replicas, shuffle", [(23, 2, True), (5, 3, True), (2, 4, True),
                                                   (10, 3, False), (7, 1, True)])
def test_sampler_order_is_torch_distributed_samplers(n, replicas, shuffle):
    # Checkpoints from earlier runs resume into the same order, padding included.
    from torch.utils.data.distributed import DistributedSampler

    for rank in range(replicas):
        ours = ResumableSampler(list(range(n)), replicas, rank, seed=7, shuffle=shuffle)
        torchs = DistributedSampler(list(range(n)), replicas, rank, shuffle=shuffle, seed=7)
        for epoch in (0, 3):
            ours.set_position(epoch, 0)
            torchs.set_epoch(epoch)
            assert list(ours) == list(torchs)
            assert all(type(i) is int for i in ours)


def test_bad_caption_file_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"split": "train", "sentences": []}]}))
    with pytest.raises(VLPError, match=r"bad.json: images\[0\] lacks"):
        read_captions([bad], ["train"])
    with pytest.raises(VLPError, match="no such caption annotation file"):
        read_captions([tmp_path / "missing.json"], ["train"])
    captions_json(tmp_path / "ok.json", 2)
    assert len(read_captions([tmp_path / "ok.json"], ["train"])) == 4
