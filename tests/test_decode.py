"""Decoding: cache vs recompute, beam vs greedy, constraints, padding, sampling, scoring
given captions."""

from __future__ import annotations

import math

import pytest
import torch

from vlp.decode import CaptionGenerator, SearchSettings, beam_search, caption_log_probs, greedy
from vlp.decode.processors import NoRepeatNgram
from vlp.errors import VLPError
from vlp.model import UnifiedVLP, VLPConfig

EOS = 2


def tiny_model(seed=0, vocab=40):
    torch.manual_seed(seed)
    cfg = VLPConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=48, max_position_embeddings=48, region_feature_dim=8,
                    region_hidden_size=8, region_classes=3, max_regions=6, pad_token_id=0,
                    cls_token_id=1, sep_token_id=EOS, mask_token_id=3)
    model = UnifiedVLP(cfg).eval()
    with torch.no_grad():  # a livelier output distribution than the init's
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def regions(b=3, r=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, r, 8, generator=g)
    locs = torch.randn(b, r, 9, generator=g)
    n = torch.tensor([5, 3, 4][:b])
    return feats, locs, n


@pytest.mark.parametrize("beam", [1, 3])
def test_cache_and_recompute_give_the_same_captions_and_scores(beam):
    model = tiny_model()
    s = SearchSettings(eos_id=EOS, max_length=12, beam_size=beam)
    a = CaptionGenerator(model, s).generate(*regions())
    b = CaptionGenerator(model, s, use_cache=False).generate(*regions())
    assert [h.tokens for h in a] == [h.tokens for h in b]
    assert all(abs(x.score - y.score) <= 1e-5 for x, y in zip(a, b))
    assert any(len(h.tokens) > 2 for h in a)


@pytest.mark.parametrize("use_cache", [True, False])
def test_a_caption_scored_token_by_token_gets_the_score_its_search_gave(use_cache):
    model = tiny_model(seed=3)
    gen = CaptionGenerator(model, SearchSettings(eos_id=EOS, max_length=10), use_cache=use_cache)
    hyps = gen.generate(*regions())

    def score(rows):
        lengths = torch.tensor([len(r) for r in rows])
        tokens = torch.full((len(rows), int(lengths.max())), 7)  # 7: padding, never scored
        for i, r in enumerate(rows):
            tokens[i, :len(r)] = torch.tensor(r)
        with torch.no_grad():
            return caption_log_probs(gen._steps(*regions()), tokens, lengths), lengths

    full, _ = score([h.tokens + [EOS] if h.finished else h.tokens for h in hyps])
    assert all(math.isclose(float(full[i].sum()), h.score, abs_tol=1e-5)
               for i, h in enumerate(hyps))
    cut, lengths = score([h.tokens[:n] for h, n in zip(hyps, (9, 6, 3))])
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(cut[i, :n], full[i, :n], atol=1e-5)
        assert float(cut[i, n:].abs().sum()) == 0.0 and (cut[i, :n] < 0).all()


def test_beam_one_is_greedy():
    model = tiny_model(seed=3)
    g = CaptionGenerator(model, SearchSettings(eos_id=EOS, max_length=10)).generate(*regions())
    b1 = SearchSettings(eos_id=EOS, max_length=10, beam_size=1)
    steps = CaptionGenerator(model, b1)._steps(*regions())
    with torch.no_grad():
        b = beam_search(steps, 3, b1)
    assert [h.tokens for h in g] == [h.tokens for h in b]
    assert all(math.isclose(x.score, y.score, abs_tol=1e-6) for x, y in zip(g, b))


class TableSteps:
    """Hand-written next-token log-probabilities keyed by the prefix so far."""

    def __init__(self, table: dict[tuple, dict[int, float]], vocab: int = 6):
        self.table, self.vocab = table, vocab
        self.rows: list[tuple] = [()]

    def step(self, prev):
        if prev is not None:
            self.rows = [r + (int(t),) for r, t in zip(self.rows, prev)]
        out = torch.full((len(self.rows), self.vocab), -50.0)
        for i, prefix in enumerate(self.rows):
            for tok, p in self.table.get(prefix, {EOS: 1.0}).items():
                out[i, tok] = math.log(p)
        return out  # log-probs already: log_softmax leaves them (they sum to 1)

    def reorder(self, index):
        self.rows = [self.rows[i] for i in index.tolist()]


TABLE = {(): {4: 0.6, 5: 0.4},
         (4,): {4: 0.35, 5: 0.35, EOS: 0.3},
         (5,): {EOS: 0.9, 4: 0.1},
         (4, 4): {EOS: 1.0}, (4, 5): {EOS: 1.0}}


def test_beam_finds_the_better_sequence_greedy_misses():
    s = SearchSettings(eos_id=EOS, max_length=5, beam_size=2)
    g = greedy(TableSteps(TABLE), 1, s)[0]
    b = beam_search(TableSteps(TABLE), 1, s)[0]
    assert g.tokens == [4, 4] and g.score == pytest.approx(math.log(0.6 * 0.35))
    assert b.tokens == [5] and b.score == pytest.approx(math.log(0.4 * 0.9))
    # VLP's additive length penalty: a large bonus per token prefers the longer caption.
    long = beam_search(TableSteps(TABLE), 1, SearchSettings(eos_id=EOS, max_length=5,
                                                            beam_size=2, length_penalty=1.0))[0]
    assert long.tokens == [4, 4] or long.tokens == [4, 5]
    # Cut at max_length, the live beams are candidates too, unfinished: [4] beats [5].
    (cut,) = beam_search(TableSteps(TABLE), 1, SearchSettings(eos_id=EOS, max_length=1,
                                                               beam_size=2))
    assert (cut.tokens, cut.finished) == ([4], False)
    assert cut.score == pytest.approx(math.log(0.6))
    (two,) = beam_search(TableSteps(TABLE), 1, SearchSettings(eos_id=EOS, max_length=2,
                                                               beam_size=2))
    assert (two.tokens, two.finished) == ([5], True)
    assert two.score == pytest.approx(math.log(0.4 * 0.9))


def test_the_n_best_are_the_candidates_in_order_the_first_being_the_caption():
    from vlp.decode import beam_search_n_best

    s = SearchSettings(eos_id=EOS, max_length=5, beam_size=2)
    (found,) = beam_search_n_best(TableSteps(TABLE), 1, s, 3)
    # [5] ends at step 2 (0.4 * 0.9), [4, x] at step 3 (0.6 * 0.35, x = 4 or 5, a tie);
    # the third is the beam that step 3 filled with a token of the table's floor (e^-50).
    assert found[0].tokens == [5] and found[1].tokens in ([4, 4], [4, 5])
    assert [h.score for h in found[:2]] == pytest.approx([math.log(0.36), math.log(0.21)])
    assert found[2].score == pytest.approx(math.log(0.21) - 50)
    assert found[0] == beam_search(TableSteps(TABLE), 1, s)[0]
    model, (feats, locs, n) = tiny_model(seed=3), regions()
    gen = CaptionGenerator(model, SearchSettings(eos_id=EOS, max_length=8, beam_size=3))
    best = gen.generate_n_best(feats, locs, n, 3)
    assert [b[0] for b in best] == gen.generate(feats, locs, n)
    assert all(len(b) == 3 and [h.score for h in b] == sorted((h.score for h in b), reverse=True)
               for b in best)
    with pytest.raises(VLPError, match="4 best captions need a beam of at least 4"):
        gen.generate_n_best(feats, locs, n, 4)


def test_min_length_and_ngram_blocking_hold():
    model = tiny_model(seed=5, vocab=12)
    s = SearchSettings(eos_id=EOS, max_length=16, beam_size=3, min_length=6,
                       forbid_duplicate_ngrams=True, ngram_size=2)
    for h in CaptionGenerator(model, s).generate(*regions()):
        assert len(h.tokens) >= 5 or not h.finished  # 6 tokens with the end token
        pairs = list(zip(h.tokens, h.tokens[1:]))
        assert len(pairs) == len(set(pairs)), h.tokens


def test_greedy_ignores_min_length_and_ngram_blocking_as_vlps_did():
    """VLP's greedy loop took the argmax of every step; only its beam search applied
    --min_len and --forbid_duplicate_ngrams. With them, greedy gives the same captions;
    beam search (which honours them) does not end early or repeat a pair."""
    model = tiny_model(seed=5, vocab=12)
    plain = SearchSettings(eos_id=EOS, max_length=16)
    bound = SearchSettings(eos_id=EOS, max_length=16, min_length=6,
                           forbid_duplicate_ngrams=True, ngram_size=2)
    free = CaptionGenerator(model, plain).generate(*regions())
    constrained = CaptionGenerator(model, bound).generate(*regions())
    assert [(h.tokens, h.score) for h in free] == [(h.tokens, h.score) for h in constrained]
    # The constraints would have changed these greedy captions: one ends before 5 tokens
    # or repeats a pair.
    assert any((h.finished and len(h.tokens) < 5) or
               len(set(zip(h.tokens, h.tokens[1:]))) < len(h.tokens) - 1 for h in free)


def test_ngram_blocking_is_exact_on_a_small_history():
    block = NoRepeatNgram(3, ignore=(9,))
    history = torch.tensor([[5, 6, 7, 5, 6], [5, 9, 7, 5, 9], [1, 2, 3, 4, 5]])
    out = block(torch.zeros(3, 10), history)
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [7]
    assert not torch.isinf(out[1]).any()   # the tail holds an ignored word
    assert not torch.isinf(out[2]).any()


def test_a_padded_batch_decodes_as_each_image_alone():
    model = tiny_model(seed=7)
    feats, locs, n = regions()
    s = SearchSettings(eos_id=EOS, max_length=10, beam_size=3)
    together = CaptionGenerator(model, s).generate(feats, locs, n)
    for i in range(3):
        k = int(n[i])
        alone = CaptionGenerator(model, s).generate(feats[i:i + 1, :k], locs[i:i + 1, :k], n[i:i + 1])
        assert alone[0].tokens == together[i].tokens
        assert abs(alone[0].score - together[i].score) < 1e-4


def test_sampling_keeps_grad_and_pads_after_the_end():
    model = tiny_model(seed=2, vocab=8)
    model.train()
    gen = CaptionGenerator(model, SearchSettings(eos_id=EOS, max_length=8))
    out = gen.sample(*regions(), generator=torch.Generator().manual_seed(0))
    assert out.log_probs.requires_grad
    out.log_probs.sum().backward()
    assert model.embeddings.word_embeddings.weight.grad is not None
    for row, length in zip(out.tokens.tolist(), out.lengths.tolist()):
        if EOS in row:
            assert row.index(EOS) + 1 == length and all(t == 0 for t in row[length:])
    after = torch.arange(out.tokens.shape[1])[None, :] >= out.lengths[:, None]
    assert (out.log_probs[after] == 0).all()


def test_too_long_a_caption_for_the_position_table_is_named():
    model = tiny_model()
    with pytest.raises(VLPError, match="max_tgt_length"):
        CaptionGenerator(model, SearchSettings(eos_id=EOS, max_length=60)).generate(*regions())
