"""Masks, segment and position ids from lengths; seq2seq causality; the K/V cache."""

from __future__ import annotations

import torch

from vlp.model import UnifiedVLP, VLPConfig, build_layout


def tiny_config(**kw) -> VLPConfig:
    base = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=48, max_position_embeddings=40, region_feature_dim=12,
                region_hidden_size=12, region_classes=4, max_regions=6, cls_token_id=1,
                sep_token_id=2, mask_token_id=3, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0)
    return VLPConfig(**{**base, **kw})


def rows(*text: str) -> torch.Tensor:
    return torch.tensor([[int(c) for c in r] for r in text], dtype=torch.bool)


# Three examples, 2 region slots, 3 text slots: L = 2 + 2 + 3 = 7.
# 0: two regions, "w1 w2 [SEP]", seq2seq.  1: one region, "w1 [SEP]", bidirectional.
# 2: one region, "w1 [SEP]", seq2seq.
NUM_REGIONS = torch.tensor([2, 1, 1])
TEXT_LENGTHS = torch.tensor([3, 2, 2])
S2S = torch.tensor([True, False, True])


def layout(type_vocab_size=6):
    return build_layout(NUM_REGIONS, TEXT_LENGTHS, 2, 3, S2S,
                        tiny_config(type_vocab_size=type_vocab_size))


def test_masks_equal_hand_written_matrices():
    #            CLS r1 r2 SEP w1 w2 SEP
    seq2seq_full = rows("1111000", "1111000", "1111000", "1111000",
                        "1111100", "1111110", "1111111")
    # Region slot 2 and text slot 6 are padding: no query sees them; padded queries
    # see the real positions (bidirectional) or the image block (seq2seq).
    bidirectional = rows(*["1101110"] * 7)
    seq2seq_short = rows("1101000", "1101000", "1101000", "1101000",
                         "1101100", "1101110", "1101000")
    mask = layout().mask
    assert mask.shape == (3, 1, 7, 7)
    assert torch.equal(mask[0, 0], seq2seq_full)
    assert torch.equal(mask[1, 0], bidirectional)
    assert torch.equal(mask[2, 0], seq2seq_short)


def test_positions_continue_after_each_images_own_regions():
    pos = layout().position_ids
    assert pos[0].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert pos[1].tolist() == [0, 1, 0, 2, 3, 4, 0]
    assert pos[2].tolist() == [0, 1, 0, 2, 3, 4, 0]


def test_segment_ids_six_type_and_legacy_two_type():
    assert layout(6).token_type_ids.tolist() == [[4, 4, 4, 4, 5, 5, 5],
                                                 [0, 0, 0, 0, 1, 1, 0],
                                                 [4, 4, 0, 4, 5, 5, 0]]
    assert layout(2).token_type_ids.tolist() == [[0, 0, 0, 0, 1, 1, 1],
                                                 [0, 0, 0, 0, 1, 1, 0],
                                                 [0, 0, 0, 0, 1, 1, 0]]


def inputs(b=2, r=3, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(text_ids=torch.randint(5, 60, (b, t), generator=g),
                text_lengths=torch.tensor([t, t - 2])[:b],
                region_features=torch.randn(b, r, 12, generator=g),
                region_locations=torch.rand(b, r, 10, generator=g),
                num_regions=torch.tensor([r, r - 1])[:b])


def test_seq2seq_changing_text_token_j_leaves_earlier_text_and_image_unchanged():
    torch.manual_seed(0)
    model = UnifiedVLP(tiny_config()).eval()
    x, r, j = inputs(), 3, 3
    s2s = torch.tensor([True, True])
    changed = {**x, "text_ids": x["text_ids"].clone()}
    changed["text_ids"][:, j] = (changed["text_ids"][:, j] + 7) % 55 + 5
    with torch.no_grad():
        a, b = model(**x, s2s=s2s), model(**changed, s2s=s2s)
        bi_a, bi_b = model(**x, s2s=~s2s), model(**changed, s2s=~s2s)
    first_text = r + 2
    assert torch.allclose(a[:, :first_text + j], b[:, :first_text + j], atol=1e-6)
    assert (a[:, first_text + j] - b[:, first_text + j]).abs().amax(-1).gt(1e-3).all()
    # Bidirectionally the same change reaches the image block: the test can tell.
    assert not torch.allclose(bi_a[:, :first_text], bi_b[:, :first_text], atol=1e-4)


def test_padding_content_never_changes_real_outputs():
    torch.manual_seed(0)
    model = UnifiedVLP(tiny_config()).eval()
    x = inputs()
    y = {k: v.clone() for k, v in x.items()}
    y["text_ids"][1, 4:] = 9                      # text padding of example 1
    y["region_features"][1, 2] += 5.0             # region slot past example 1's count
    for s2s in (torch.tensor([True, True]), torch.tensor([False, False])):
        with torch.no_grad():
            a, b = model(**x, s2s=s2s), model(**y, s2s=s2s)
        real = torch.tensor([1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0], dtype=torch.bool)
        assert torch.allclose(a[1, real], b[1, real], atol=1e-6)


def test_cached_step_by_step_encoding_equals_the_full_seq2seq_pass():
    torch.manual_seed(0)
    model = UnifiedVLP(tiny_config()).eval()
    x = inputs()
    x["text_lengths"] = torch.tensor([6, 6])
    x["num_regions"] = torch.tensor([3, 3])
    s2s = torch.tensor([True, True])
    with torch.no_grad():
        emb, lay = model.embed(**x, s2s=s2s)
        full = model.encoder(emb, lay.mask)
        cache = model.new_cache()
        image = 3 + 2
        steps = [model.encoder(emb[:, :image], lay.mask[:, :, :image, :image], cache)]
        for i in range(image, emb.shape[1]):
            steps.append(model.encoder(emb[:, i:i + 1], lay.mask[:, :, i:i + 1, :i + 1], cache))
        assert len(cache) == emb.shape[1]
        assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)

        # Reordering the cache by index is the same as reordering the results.
        same = model.new_cache()
        same.layers = list(cache.layers)
        see_all = torch.ones(2, 1, 1, emb.shape[1] + 1, dtype=torch.bool)
        plain = model.encoder(emb[:, -1:], see_all, same)
        cache.reorder(torch.tensor([1, 0]))
        swapped = model.encoder(emb[[1, 0], -1:], see_all, cache)
    assert torch.allclose(swapped, plain[[1, 0]], atol=1e-6)
    assert not torch.allclose(plain[0], plain[1], atol=1e-3)
    assert len(cache) == emb.shape[1] + 1


def test_each_example_draws_its_objective_with_s2s_prob():
    from vlp.model import draw_objectives

    g = torch.Generator().manual_seed(0)
    draws = draw_objectives(10_000, 0.75, generator=g)
    # 10k draws: the share's standard deviation is 0.0043.
    assert draws.dtype == torch.bool and abs(draws.float().mean().item() - 0.75) < 0.015
    # Examples draw apart: neighbours agree as often as two independent draws would.
    agree = (draws[1:] == draws[:-1]).float().mean().item()
    assert abs(agree - (0.75 ** 2 + 0.25 ** 2)) < 0.02
    assert draw_objectives(100, 1.0, generator=g).all()
    assert not draw_objectives(100, 0.0, generator=g).any()
