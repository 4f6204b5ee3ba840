"""SCST: the CIDEr-D reward against pycocoevalcap, baselines, masks, the gradient's sign."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train_fixtures import WORDS, make_inputs, train_argv
from vlp.data.captions import Caption
from vlp.errors import VLPError
from vlp.model.decoding import CachedSteps
from vlp.train.main import main
from vlp.train.scst import CiderReward, leave_one_out, policy_loss


def random_caption(rng, lo=3, hi=12) -> str:
    return " ".join(rng.choice(WORDS, rng.integers(lo, hi)))


def test_reward_equals_pycocoevalcap_cider_d_with_the_same_document_frequencies():
    from pycocoevalcap.cider.cider import Cider

    rng = np.random.default_rng(0)
    refs = {f"im{i}": [random_caption(rng) for _ in range(rng.integers(1, 6))] for i in range(40)}
    captions = [Caption(k, k, text) for k, texts in refs.items() for text in texts]
    reward = CiderReward.from_captions(captions)
    keys = list(refs)
    samples = [random_caption(rng, 1, 15) for _ in keys]
    ours = reward(keys, samples)
    # pycocoevalcap takes tokenized strings; these words need no tokenizing.
    _, theirs = Cider().compute_score({k: refs[k] for k in keys},
                                      {k: [s] for k, s in zip(keys, samples)})
    assert np.abs(ours - np.asarray(theirs)).max() <= 1e-6
    assert ours.max() > 0


def test_mean_baseline_leaves_the_sample_itself_out():
    r = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    assert leave_one_out(r, 3).tolist() == [2.5, 2.0, 1.5, 25.0, 20.0, 15.0]


def test_loss_covers_each_sample_through_its_end_token_only():
    log_probs = -torch.rand(3, 6)
    lengths = torch.tensor([2, 6, 4])
    adv = torch.tensor([1.0, -0.5, 2.0])
    base = policy_loss(log_probs, lengths, adv)
    changed = log_probs.clone()
    changed[0, 2:] = -100.0   # past sample 0's end
    changed[2, 4:] = -100.0
    assert torch.equal(policy_loss(changed, lengths, adv), base)
    expected = -(log_probs[0, :2].sum() * 1 - 0.5 * log_probs[1].sum() + 2 * log_probs[2, :4].sum()) / 12
    assert torch.isclose(base, expected)


@torch.no_grad()
def sequence_log_prob(model, feats, locs, n, tokens: list[int]) -> float:
    steps = CachedSteps(model, feats, locs, n, max_length=len(tokens))
    total, prev = 0.0, None
    for tok in tokens:
        lp = torch.log_softmax(steps.step(prev).float(), -1)[0, tok]
        total += float(lp)
        prev = torch.tensor([tok])
    return total


def test_a_sample_above_its_baseline_becomes_more_likely():
    from test_decode import regions, tiny_model

    model = tiny_model(seed=4)
    feats, locs, n = (t[:1] for t in regions())
    tokens = [7, 9, 2]
    before = sequence_log_prob(model, feats, locs, n, tokens)
    steps = CachedSteps(model, feats, locs, n, max_length=3)
    lps, prev = [], None
    for tok in tokens:
        lps.append(torch.log_softmax(steps.step(prev).float(), -1)[0, tok])
        prev = torch.tensor([tok])
    loss = policy_loss(torch.stack(lps)[None], torch.tensor([3]), torch.tensor([0.7]))
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad
    assert sequence_log_prob(model, feats, locs, n, tokens) > before


@pytest.fixture(scope="module")
def ce_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("scst")
    inputs = make_inputs(root, images=8)
    assert main(train_argv(inputs, root / "ce", "--num_train_epochs", "2")) == 0
    return inputs, root


@pytest.mark.parametrize("baseline, samples", [("greedy", "1"), ("mean", "3")])
def test_scst_runs_and_logs_reward_baseline_and_length(ce_run, baseline, samples):
    inputs, root = ce_run
    out = root / f"scst-{baseline}"
    argv = train_argv(inputs, out, "--num_train_epochs", "1", "--log_steps", "1", "--scst",
                      "--model_recover_path", str(root / "ce" / "model.2"), "--mask_prob", "0",
                      "--max_pred", "0", "--scst_baseline", baseline, "--scst_samples", samples)
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"reward", "baseline", "sample_len"} <= rows[0].keys()
    assert (out / "cider_document_frequency.json").is_file()
    if baseline == "mean":
        assert rows[0]["reward"] == pytest.approx(rows[0]["baseline"])


def test_scst_bad_input_is_named(ce_run, tmp_path, capsys):
    inputs, root = ce_run
    argv = train_argv(inputs, tmp_path / "x", "--scst")
    assert main(argv) == 2 and "--model_recover_path" in capsys.readouterr().err
    with pytest.raises(VLPError, match="image im1 has no reference caption"):
        CiderReward.from_captions([Caption("im0", 0, "a red circle"), Caption("im1", 1, " ")])
    other = tmp_path / "other_bert"
    other.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (other / name).write_bytes((inputs["bert"] / name).read_bytes())
    (other / "vocab.txt").write_text((inputs["bert"] / "vocab.txt").read_text().replace("red", "rouge"))
    argv = train_argv(inputs, tmp_path / "y", "--scst", "--model_recover_path",
                      str(root / "ce" / "model.2"))
    argv[argv.index("--bert_model") + 1] = str(other)
    assert main(argv) == 2 and "vocabulary" in capsys.readouterr().err
