"""SCST: VLP's recipe against a transcription of VLP's code, the standard CIDEr-D reward
against pycocoevalcap, baselines, masks, the gradient's sign, short training runs."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train_fixtures import WORDS, make_inputs, train_argv
from vlp.data.captions import Caption
from vlp.decode import SearchSettings
from vlp.errors import VLPError
from vlp.model.decoding import CachedSteps
from vlp.train.main import main
from vlp.train.scst import (CiderReward, ScstTask, leave_one_out, policy_loss, vlp_cider,
                            vlp_decoded, vlp_reference)


# -- VLP's SCST, transcribed: vlp/scst_utils.py, the --scst branch of run_img2txt_dist.py,
# BertForSeq2SeqDecoder.forward (pytorch_pretrained_bert/modeling.py) and the seq2seq
# training mask of Preprocess4Seq2seq (vlp/seq2seq_loader.py). VLP's CiderD_scorer,
# coco-caption's Cider(df='corpus'), computes what pycocoevalcap's Cider computes.

def vlp_array_to_str(arr):
    out = ''
    for i in range(len(arr)):
        out += str(arr[i]) + ' '
        if arr[i] == 0:
            break
    return out.strip()


def vlp_get_self_critical_reward(greedy_res, gt_ids, gen_result, batch_size):
    from pycocoevalcap.cider.cider import Cider

    greedy_res = greedy_res.data.cpu().numpy()
    gen_result = gen_result.data.cpu().numpy()
    gt_ids = gt_ids.data.cpu().numpy()
    res = OrderedDict()
    for i in range(batch_size):
        res[i] = [vlp_array_to_str(gen_result[i])]
    for i in range(batch_size):
        res[batch_size + i] = [vlp_array_to_str(greedy_res[i])]
    gts = OrderedDict()
    for i in range(batch_size):
        gts[i] = [vlp_array_to_str(gt_ids[i])]
    for i in range(batch_size):
        gts[batch_size + i] = [vlp_array_to_str(gt_ids[i])]
    cider_reward_weight = 1
    _, cider_scores = Cider().compute_score(gts, res)
    scores = cider_reward_weight * cider_scores
    scores = scores[:batch_size] - scores[batch_size:]
    rewards = np.repeat(scores[:, np.newaxis], gen_result.shape[1], 1)
    return rewards


def vlp_reward_criterion(input, seq, reward):
    input = input.contiguous().view(-1)
    reward = reward.contiguous().view(-1)
    mask = (seq > 0).float()
    mask = torch.cat([mask.new(mask.size(0), 1).fill_(1), mask[:, :-1]], 1).contiguous().view(-1)
    output = - input * reward * mask
    output = torch.sum(output) / torch.sum(mask)
    return output


def vlp_keep_through_end(raw, eos_word_ids, pad_word_ids):
    """The training loop's copy of greedy_res_raw / gen_result_raw into a row of zeros."""
    res = raw.new(raw.size(0), raw.size(1)).fill_(0)
    for b in range(raw.size(0)):
        for idx in range(raw.size(1)):
            if raw[b][idx] not in [eos_word_ids, pad_word_ids]:
                res[b][idx] = raw[b][idx]
            else:
                if raw[b][idx] == eos_word_ids:
                    res[b][idx] = eos_word_ids
                break
    return res


def vlp_training_input(captions, regions, max_len_b, c):
    """input_ids, segment_ids and input_mask of Preprocess4Seq2seq (s2s, --new_segment_ids,
    no masking as under --scst) for word-piece id captions."""
    max_len = regions + max_len_b + 3
    tril = torch.tril(torch.ones(max_len, max_len, dtype=torch.long))
    img_seg, txt_seg = c.segment_ids["s2s"]
    ids, segs, masks = [], [], []
    for tokens_b in captions:
        tokens_a = [c.mask_token_id] * regions  # VLP's [UNK]s: region slots, replaced
        tokens = [c.cls_token_id] + tokens_a + [c.sep_token_id] + tokens_b + [c.sep_token_id]
        segment_ids = [img_seg] * (len(tokens_a) + 2) + [txt_seg] * (len(tokens_b) + 1)
        n_pad = max_len - len(tokens)
        input_mask = torch.zeros(max_len, max_len, dtype=torch.long)
        second_st, second_end = len(tokens_a) + 2, len(tokens_a) + len(tokens_b) + 3
        input_mask[:, :len(tokens_a) + 2].fill_(1)
        input_mask[second_st:second_end, second_st:second_end].copy_(
            tril[:second_end - second_st, :second_end - second_st])
        ids.append(tokens + [0] * n_pad)
        segs.append(segment_ids + [0] * n_pad)
        masks.append(input_mask)
    return torch.tensor(ids), torch.tensor(segs), torch.stack(masks)


def vlp_scores(model, feats, locs, x_input_ids, segment_ids, input_mask, regions):
    """One step of BertForSeq2SeqDecoder.forward on this model's layers: the [MASK] at the
    end of x_input_ids scored with the training mask's rows and segment ids. VLP cached
    the prefix; recomputing it gives the same, since no mask row sees a later position."""
    b, length = x_input_ids.shape
    position_ids = torch.arange(length).unsqueeze(0).expand(b, length)
    words = model.embeddings.words(x_input_ids, position_ids)
    slots = torch.cat([words[:, :1], model.region(feats, locs), words[:, regions + 1:]], 1)
    x = model.embeddings(slots, segment_ids[:, :length])
    hidden = model.encoder(x, input_mask[:, None, :length, :length].bool())
    return model.mlm_logits(hidden[:, -1:])


def vlp_decode(model, feats, locs, input_ids, segment_ids, input_mask, regions, sample_mode):
    input_dummy = input_ids[:, :regions + 2]
    output_length = segment_ids.shape[1]
    mask_ids = input_dummy[:, :1] * 0 + model.config.mask_token_id
    curr_ids, output_ids, output_probs = input_dummy, [], []
    next_pos = input_dummy.shape[1]
    while next_pos < output_length:
        prediction_scores = vlp_scores(model, feats, locs, torch.cat((curr_ids, mask_ids), 1),
                                       segment_ids, input_mask, regions)
        if sample_mode == 'greedy':
            max_probs, max_ids = torch.max(prediction_scores, dim=-1)
        else:
            prediction_scores = prediction_scores.squeeze(1)
            prediction_probs = F.softmax(prediction_scores, dim=-1).detach()
            max_ids = torch.multinomial(prediction_probs, num_samples=1, replacement=True)
            max_probs = torch.gather(F.log_softmax(prediction_scores, dim=-1), 1, max_ids)
        output_ids.append(max_ids)
        output_probs.append(max_probs)
        curr_ids = torch.cat((curr_ids, max_ids), 1)
        next_pos += 1
    return torch.cat(output_ids, dim=1), torch.cat(output_probs, dim=1)


def vlp_scst_step(model, feats, locs, captions, max_len_b):
    """The --scst branch of VLP's training loop: loss, mean reward, the samples and the
    greedy captions."""
    c, regions = model.config, feats.shape[1]
    input_ids, segment_ids, input_mask = vlp_training_input(captions, regions, max_len_b, c)
    eos_word_ids, pad_word_ids = c.sep_token_id, c.pad_token_id
    model.eval()
    with torch.no_grad():
        greedy_res_raw, _ = vlp_decode(model, feats, locs, input_ids, segment_ids, input_mask,
                                       regions, 'greedy')
    greedy_res = vlp_keep_through_end(greedy_res_raw, eos_word_ids, pad_word_ids)
    model.train()
    gen_result_raw, sample_logprobs = vlp_decode(model, feats, locs, input_ids, segment_ids,
                                                 input_mask, regions, 'sample')
    gen_result = vlp_keep_through_end(gen_result_raw, eos_word_ids, pad_word_ids)
    gt_ids = input_ids[:, regions + 2:]
    reward = vlp_get_self_critical_reward(greedy_res, gt_ids, gen_result, gt_ids.size(0))
    reward = torch.from_numpy(reward).float()
    loss = vlp_reward_criterion(sample_logprobs, gen_result.data, reward)
    return loss, reward.mean(), gen_result, greedy_res


def scst_model(seed=4):
    """A tiny model without dropout whose samples end at every length, some with [PAD]."""
    from test_decode import EOS, tiny_model

    model = tiny_model(seed=seed)
    model.set_dropout(0.0)
    with torch.no_grad():
        model.mlm_head.bias[EOS] += 2.5
        model.mlm_head.bias[model.config.pad_token_id] += 1.0
    return model


def scst_batch(captions, max_len_b, regions=5, seed=1):
    from test_decode import EOS

    g = torch.Generator().manual_seed(seed)
    b = len(captions)
    feats, locs = torch.randn(b, regions, 8, generator=g), torch.randn(b, regions, 9, generator=g)
    text = torch.zeros(b, max_len_b + 1, dtype=torch.long)
    for i, cap in enumerate(captions):
        text[i, :len(cap) + 1] = torch.tensor(cap + [EOS])
    lengths = torch.tensor([len(cap) + 1 for cap in captions])
    return feats, locs, torch.full((b,), regions), text, lengths


CAPTIONS = [[5], [26, 12], [8, 29, 10], [26, 11, 29, 14, 26, 12, 35], [12, 13, 14, 15], [29, 26],
            [14, 20], [34, 35, 26, 9, 29]]


def test_vlp_reward_and_loss_equal_vlps_code_on_the_same_rows():
    from test_decode import EOS

    rng = np.random.default_rng(0)
    b, length, pad = 12, 9, 0
    refs = [list(rng.integers(5, 15, rng.integers(1, length - 1))) for _ in range(b)]
    refs[0] = list(rng.integers(5, 15, length - 1))  # fills the text slots: no [PAD] after
    gt_ids = torch.zeros(b, length, dtype=torch.long)
    for i, r in enumerate(refs):
        gt_ids[i, :len(r) + 1] = torch.tensor(r + [EOS])

    def raw_rows():
        rows = torch.from_numpy(rng.integers(5, 15, (b, length)))
        for i in range(b):
            end = rng.integers(0, length + 2)
            if end < length:
                rows[i, end] = EOS if rng.random() < 0.8 else pad
        rows[0, length - 1], rows[1, 0], rows[2, 3] = EOS, EOS, pad
        rows[3] = torch.from_numpy(rng.integers(5, 15, length))   # no end at all
        return rows

    samples, greedy = raw_rows(), raw_rows()
    log_probs = -torch.rand(b, length)
    theirs = vlp_get_self_critical_reward(vlp_keep_through_end(greedy, EOS, pad), gt_ids,
                                          vlp_keep_through_end(samples, EOS, pad), b)
    their_loss = vlp_reward_criterion(log_probs, vlp_keep_through_end(samples, EOS, pad),
                                      torch.from_numpy(theirs).float())

    decoded = [vlp_decoded(row, EOS, pad, length) for row in samples.tolist()]
    greedy_ids = [vlp_decoded(row, EOS, pad, length)[0] for row in greedy.tolist()]
    references = [vlp_reference(r + [EOS], pad, length) for r in refs]
    scores = vlp_cider([ids for ids, _ in decoded] + greedy_ids, references + references)
    ours = scores[:b] - scores[b:]
    our_loss = policy_loss(log_probs, torch.tensor([n for _, n in decoded]),
                           torch.as_tensor(ours, dtype=torch.float32))
    assert np.abs(ours - theirs[:, 0]).max() <= 1e-6
    assert abs(float(our_loss) - float(their_loss)) <= 1e-6
    assert np.abs(ours).max() > 0.1
    # The document frequencies are the call's: scoring the samples alone changes them.
    alone = vlp_cider([ids for ids, _ in decoded], references)
    assert np.abs(alone - scores[:b]).max() > 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vlp_scst_step_equals_vlps_training_step(seed):
    """The same draws (same RNG) give VLP's loss and mean reward: its decoding mask for
    samples past their reference, its end tokens, document frequencies and loss mask."""
    max_len_b = 7
    model = scst_model()
    feats, locs, n, text, lengths = scst_batch(CAPTIONS, max_len_b)
    task = ScstTask(model, None, None, SearchSettings(model.config.sep_token_id, max_len_b + 1))
    model.train()
    torch.manual_seed(seed)
    ours = task(feats, locs, n, text, lengths, [str(i) for i in range(len(CAPTIONS))])
    torch.manual_seed(seed)
    their_loss, their_reward, gen_result, greedy_res = vlp_scst_step(model, feats, locs, CAPTIONS,
                                                                     max_len_b)
    assert abs(ours["loss"].item() - their_loss.item()) <= 1e-6
    assert abs(ours["reward"] - ours["baseline"] - float(their_reward)) <= 1e-6
    sample_lengths = (gen_result > 0).sum(1)
    assert (sample_lengths > lengths).any()     # past the reference: VLP's mask rows
    assert ((greedy_res > 0).sum(1) > lengths).any()
    assert (sample_lengths < max_len_b).any()   # ended early: one more token in the loss


def test_decoding_with_the_training_mask_scores_as_vlp():
    """Text positions past the example's [SEP] see only the image and carry segment 0."""
    max_len_b = 7
    model = scst_model().eval()
    feats, locs, n, text, lengths = scst_batch(CAPTIONS, max_len_b)
    c, regions = model.config, feats.shape[1]
    input_ids, segment_ids, input_mask = vlp_training_input(CAPTIONS, regions, max_len_b, c)
    tokens = torch.from_numpy(np.random.default_rng(3).integers(5, 40, (len(CAPTIONS), max_len_b + 1)))
    with torch.no_grad():
        steps = CachedSteps(model, feats, locs, n, max_len_b + 1, mask_lengths=lengths)
        plain = CachedSteps(model, feats, locs, n, max_len_b + 1)
        prefix, prev = input_ids[:, :regions + 2], None
        mask = torch.full((len(CAPTIONS), 1), c.mask_token_id)
        for t in range(max_len_b + 1):
            theirs = vlp_scores(model, feats, locs, torch.cat([prefix, mask], 1), segment_ids,
                                input_mask, regions)[:, 0]
            ours, usual = steps.step(prev), plain.step(prev)
            assert (ours - theirs).abs().max() <= 1e-5
            past = t >= lengths
            assert torch.equal((usual - theirs).abs().amax(1) > 1e-4, past)
            prev = tokens[:, t]
            prefix = torch.cat([prefix, tokens[:, t:t + 1]], 1)


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


@pytest.mark.parametrize("reward, baseline, samples", [
    ("vlp", "greedy", "1"), ("vlp", "mean", "3"), ("standard", "greedy", "1"),
    ("standard", "mean", "3")])
def test_scst_runs_and_logs_reward_baseline_and_length(ce_run, capsys, reward, baseline, samples):
    inputs, root = ce_run
    out = root / f"scst-{reward}-{baseline}"
    argv = train_argv(inputs, out, "--num_train_epochs", "1", "--log_steps", "1", "--scst",
                      "--model_recover_path", str(root / "ce" / "model.2"), "--mask_prob", "0",
                      "--max_pred", "0", "--scst_reward", reward, "--scst_baseline", baseline,
                      "--scst_samples", samples)
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"reward", "baseline", "sample_len"} <= rows[0].keys()
    # VLP's SCST trains on every caption (8 images x 2); the standard recipe on each image.
    assert f"{16 if reward == 'vlp' else 8} captions of 8 images" in capsys.readouterr().out
    assert len(rows) == (2 if reward == "vlp" else 1)
    assert (out / "cider_document_frequency.json").is_file() == (reward == "standard")
    if baseline == "mean":
        assert rows[0]["reward"] == pytest.approx(rows[0]["baseline"])


def test_scst_bad_input_is_named(ce_run, tmp_path, capsys):
    inputs, root = ce_run
    argv = train_argv(inputs, tmp_path / "x", "--scst")
    assert main(argv) == 2 and "--model_recover_path" in capsys.readouterr().err
    argv = train_argv(inputs, tmp_path / "x", "--scst", "--fsdp", "--model_recover_path",
                      str(root / "ce" / "model.2"))
    assert main(argv) == 2 and "--scst does not run with --fsdp" in capsys.readouterr().err
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
