"""`--output_vocab train`: the masked-LM head scores the training captions' tokens alone."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from test_decode import EOS, regions, tiny_model
from train_fixtures import make_inputs, train_argv
from vlp.data.tokens import load_tokenizer
from vlp.decode import CaptionGenerator, SearchSettings, caption_log_probs
from vlp.errors import VLPError
from vlp.model import UnifiedVLP, VLPConfig
from vlp.model.decoding import CachedSteps, FullSteps, decoding_steps
from vlp.model.masked_lm import MaskedText
from vlp.train.main import main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"), images=16)


def test_the_kept_softmax_is_the_full_one_with_every_other_token_excluded():
    model = tiny_model(seed=2)
    kept = [0, 2, 5, 6, 9, 17, 30, 39]
    hidden = torch.randn(3, 12, 32, requires_grad=True)
    positions = torch.tensor([[0, 4, 7], [1, 2, 9], [3, 5, 6]])
    labels = torch.tensor([[5, 9, 0], [30, 2, 17], [39, 6, 5]])
    weights = labels != 0
    masked = MaskedText(torch.zeros(3, 8, dtype=torch.long), positions, labels, weights)

    # Reference: the whole vocabulary's scores, every token outside `kept` at -inf.
    where = (positions + 2)[..., None].expand(-1, -1, 32)
    full = model.mlm_logits(hidden.gather(1, where)).flatten(0, 1)
    outside = torch.ones(40, dtype=torch.bool)
    outside[kept] = False
    per = F.cross_entropy(full.masked_fill(outside, float("-inf")), labels.flatten(),
                          reduction="none")
    expected = (per * weights.flatten()).sum() / (weights.sum() + 1e-5)
    expected_grad, = torch.autograd.grad(expected, model.embeddings.word_embeddings.weight)

    model.restrict_output(kept)
    got = model.masked_lm_loss(hidden, masked, region_slots=0)
    got_grad, = torch.autograd.grad(got, model.embeddings.word_embeddings.weight)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got_grad, expected_grad, atol=1e-6)
    assert got_grad[outside].abs().sum() == 0.0


def test_decoding_a_restricted_model_emits_only_its_tokens():
    model = tiny_model(seed=3)
    settings = SearchSettings(eos_id=EOS, max_length=12, beam_size=3, min_length=4)
    before = CaptionGenerator(model, settings).generate(*regions())
    emitted = {t for h in before for t in h.tokens}
    kept = sorted({0, EOS, 11, 12, 13} | set(list(emitted)[:2]))
    assert emitted - set(kept), "the unrestricted captions use other tokens"
    model.restrict_output(kept)
    after = CaptionGenerator(model, settings).generate(*regions())
    assert {t for h in after for t in h.tokens} <= set(kept)
    assert all(len(h.tokens) >= 4 for h in after)


KEPT = [0, EOS, 5, 8, 11, 12, 13, 20, 31]


def test_sampling_among_the_kept_tokens_draws_the_models_distribution():
    model = tiny_model(seed=4)
    model.restrict_output(KEPT)
    feats, locs, n = regions()
    reps = 4000
    many = [x.repeat_interleave(reps, 0) for x in (feats, locs, n)]
    with torch.no_grad():
        drawn = CaptionGenerator(model, SearchSettings(eos_id=EOS, max_length=1)).sample(
            *many, generator=torch.Generator().manual_seed(0))
        probs = decoding_steps(model, feats, locs, n, 1).step(None).float().softmax(-1)
    first = drawn.tokens[:, 0].view(3, reps)
    freq = torch.stack([torch.bincount(row, minlength=40) for row in first]).float() / reps
    assert set(first.unique().tolist()) <= set(KEPT)
    assert (freq - probs).abs().max() < 0.03  # 4000 draws: standard error <= 0.008


def test_a_captions_gradient_through_the_decoding_cache_is_the_full_recomputations():
    """SCST backpropagates through the cached steps, whose output rows are taken once and
    whose word lookups give sparse gradients; the gradient must be the full forward's."""
    model = tiny_model(seed=5)
    model.restrict_output(KEPT)
    feats, locs, n = regions()
    tokens = torch.tensor([[5, 8, 11, EOS, 0], [12, 12, EOS, 0, 0], [31, 20, 13, 8, EOS]])
    lengths = torch.tensor([4, 3, 5])

    def gradients(steps_class):
        model.zero_grad(set_to_none=True)
        steps = steps_class(model, feats, locs, n, tokens.shape[1])
        caption_log_probs(steps, tokens, lengths).sum().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    cached, full = gradients(CachedSteps), gradients(FullSteps)
    assert cached.keys() == full.keys()
    assert not cached["embeddings.word_embeddings.weight"].is_sparse
    for name, grad in full.items():
        assert torch.allclose(cached[name], grad, atol=1e-5), name


def test_training_keeps_the_captions_tokens_and_a_checkpoint_carries_them(inputs, tmp_path):
    out = tmp_path / "run"
    argv = train_argv(inputs, out, "--num_train_epochs", "2", "--output_vocab", "train")
    assert main(argv) == 0
    tokenizer = load_tokenizer(inputs["bert"], True)
    captions = json.loads(inputs["src"].read_text())["images"]
    ids = {i for e in captions for s in e["sentences"]
           for i in tokenizer(s["raw"], add_special_tokens=False)["input_ids"]}
    expected = sorted(ids | {tokenizer.pad_token_id, tokenizer.sep_token_id})
    model = UnifiedVLP.from_pretrained(out / "model.2")
    assert model.config.output_vocab == expected
    assert tokenizer.convert_tokens_to_ids("a") not in expected  # the captions never say "a"
    assert json.loads((out / "model.2" / "config.json").read_text())["output_vocab"] == expected
    # Finetuning it again keeps the kept tokens; "all" gives back the whole vocabulary.
    again = tmp_path / "again"
    assert main(train_argv(inputs, again, "--num_train_epochs", "1", "--model_recover_path",
                           str(out / "model.2"))) == 0
    assert UnifiedVLP.from_pretrained(again / "model.1").config.output_vocab == expected
    whole = tmp_path / "whole"
    assert main(train_argv(inputs, whole, "--num_train_epochs", "1", "--model_recover_path",
                           str(out / "model.2"), "--output_vocab", "all")) == 0
    assert UnifiedVLP.from_pretrained(whole / "model.1").config.output_vocab is None


def test_bad_output_vocabularies_are_named(inputs, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(inputs, out, "--num_train_epochs", "1", "--output_vocab",
                           "train")) == 0
    # Captions with a token the kept vocabulary lacks: one line naming the flag.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"images": [
        {"split": "train", "filename": f"img_{i:04d}.jpg", "imgid": i, "cocoid": i,
         "sentences": [{"raw": "a red circle"}]} for i in range(16)]}))
    argv = train_argv(inputs, tmp_path / "more", "--num_train_epochs", "1",
                      "--model_recover_path", str(out / "model.1"))
    argv[argv.index("--src_file") + 1] = str(other)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks token id" in err[0] and "--output_vocab" in err[0]
    assert main(train_argv(inputs, tmp_path / "vqa", "--tasks", "vqa2", "--output_vocab",
                           "train")) == 2
    assert "--output_vocab train" in capsys.readouterr().err
    with pytest.raises(VLPError, match="output_vocab lacks sep_token_id"):
        VLPConfig(vocab_size=40, output_vocab=[0, 5, 7], sep_token_id=2, cls_token_id=1,
                  mask_token_id=3)
    with pytest.raises(VLPError, match="sorted distinct"):
        VLPConfig(vocab_size=40, output_vocab=[0, 2, 2, 50], sep_token_id=2, cls_token_id=1,
                  mask_token_id=3)
