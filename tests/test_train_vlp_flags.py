"""`vlp train` with VLP's --vis_mask_prob, --relax_projection, --tokenized_input,
--config_path, --max_position_embeddings and --trunc_seg a (and `vlp decode
--config_path`), against transcriptions of VLP's loader and tokenizer."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import BertModel

from test_model_convert import vlp_state
from train_fixtures import make_inputs, train_argv
from vlp.data.captions import read_captions
from vlp.data.features import open_store
from vlp.data.region_text import RegionTextDataset, TextSettings, collate, truncate
from vlp.data.tokens import WhitespaceTokenizer, cached_tokenize, load_tokenizer
from vlp.decode.run import load_model
from vlp.errors import VLPError
from vlp.train import setup
from vlp.train.args import build_parser, check
from vlp.train.log import read_metrics
from vlp.train.main import main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"), images=8)


def parsed(inputs, out: Path, *extra: str):
    return check(build_parser().parse_args(train_argv(inputs, out, *extra)))


def dataset(inputs, vis_mask_prob: float) -> RegionTextDataset:
    tok = load_tokenizer(inputs["bert"])
    caps = read_captions([inputs["src"]], ["train"])
    tokens = cached_tokenize(tok, [c.text for c in caps], None)
    text = TextSettings(sep_id=3, vocab_size=len(tok), max_len_b=4, max_pred=3, seed=5)
    return RegionTextDataset(tokens, [c.image_key for c in caps], open_store(inputs["features"]),
                             8, text, vis_mask_prob=vis_mask_prob)


# -- --vis_mask_prob: the draws -----------------------------------------------------------

def test_masked_regions_are_drawn_per_example_as_vlp_counts_them(inputs):
    ds, plain = dataset(inputs, 0.5), dataset(inputs, 0.0)
    for i in range(len(ds)):
        e = ds[i]
        n = len(e["features"])  # the fixture's images have 5 or 4 regions
        # VLP: np.random.choice(len_vis_input, int(len_vis_input * vis_mask_prob), replace=False)
        assert len(e["masked_regions"]) == int(n * 0.5)
        assert len(set(e["masked_regions"].tolist())) == len(e["masked_regions"])
        assert all(0 <= r < n for r in e["masked_regions"])
        # Repeatable, and the text's draws are those of a run without the flag.
        assert np.array_equal(ds[i]["masked_regions"], e["masked_regions"])
        for key in ("text", "order", "kind", "coin", "random_ids", "s2s_draw"):
            assert np.array_equal(e[key], plain[i][key]), key
    first = dataset(inputs, 0.5)
    ds.set_epoch(1)
    assert any(not np.array_equal(ds[i]["masked_regions"], first[i]["masked_regions"])
               for i in range(len(ds)))
    b = collate([ds[0], ds[1], ds[2]])
    assert b.region_masked.dtype == torch.bool and b.region_masked.shape == (3, 5)
    assert b.region_masked.sum(1).tolist() == [len(ds[i]["masked_regions"]) for i in range(3)]
    assert collate([plain[0], plain[1]]).region_masked is None


def test_every_region_set_is_drawn_alike_over_many_examples():
    """Without replacement and uniform, as np.random.choice(n, k, replace=False)."""
    from vlp.data.region_text import masked_regions

    counts = np.zeros(10)
    for i in range(4000):
        counts[masked_regions(10, 0.3, np.random.default_rng([1, 0, i]))] += 1
    assert np.abs(counts / 4000 - 0.3).max() < 0.03


# -- --trunc_seg a ------------------------------------------------------------------------

def vlp_truncate_tokens_pair(tokens_a, tokens_b, max_len, max_len_a=0, max_len_b=0,
                             trunc_seg=None, always_truncate_tail=False, rand=random.random):
    """seq2seq_loader.truncate_tokens_pair."""
    num_truncated_a = [0, 0]
    num_truncated_b = [0, 0]
    while True:
        if len(tokens_a) + len(tokens_b) <= max_len:
            break
        if (max_len_a > 0) and len(tokens_a) > max_len_a:
            trunc_tokens = tokens_a
            num_truncated = num_truncated_a
        elif (max_len_b > 0) and len(tokens_b) > max_len_b:
            trunc_tokens = tokens_b
            num_truncated = num_truncated_b
        elif trunc_seg:
            # truncate the specified segment
            if trunc_seg == 'a':
                trunc_tokens = tokens_a
                num_truncated = num_truncated_a
            else:
                trunc_tokens = tokens_b
                num_truncated = num_truncated_b
        else:
            # truncate the longer segment
            if len(tokens_a) > len(tokens_b):
                trunc_tokens = tokens_a
                num_truncated = num_truncated_a
            else:
                trunc_tokens = tokens_b
                num_truncated = num_truncated_b
        # whether always truncate source sequences
        if (not always_truncate_tail) and (rand() < 0.5):
            del trunc_tokens[0]
            num_truncated[0] += 1
        else:
            trunc_tokens.pop()
            num_truncated[1] += 1
    return num_truncated_a, num_truncated_b


@pytest.mark.parametrize("tail", [False, True])
def test_trunc_seg_a_cuts_captions_as_b_does(tail):
    """Preprocess4Seq2seq calls it with tokens_a = len_vis_input [UNK]s and max_len =
    len_vis_input + max_len_b: the max_len_b branch always decides, whatever trunc_seg."""
    len_vis_input, max_len_b = 10, 6
    for length in range(1, 15):
        for seed in range(5):
            kept = {}
            for seg in ("a", "b"):
                a, b = ["[UNK]"] * len_vis_input, list(range(length))
                vlp_truncate_tokens_pair(a, b, len_vis_input + max_len_b, max_len_b=max_len_b,
                                         trunc_seg=seg, always_truncate_tail=tail,
                                         rand=random.Random(seed).random)
                assert a == ["[UNK]"] * len_vis_input
                kept[seg] = b
            assert kept["a"] == kept["b"]
            ours = truncate(np.arange(length), max_len_b, tail, np.random.default_rng(seed))
            assert len(ours) == len(kept["b"])
            if tail:
                assert ours.tolist() == kept["b"]


def test_trunc_seg_a_is_accepted_and_trains_the_same_examples(inputs, tmp_path):
    a, b = parsed(inputs, tmp_path / "a", "--trunc_seg", "a"), parsed(inputs, tmp_path / "b")
    assert a.trunc_seg == "a"
    with pytest.raises(SystemExit):
        build_parser().parse_args(train_argv(inputs, tmp_path, "--trunc_seg", "c"))
    tok = load_tokenizer(inputs["bert"])
    caps = setup.load_captions(a)
    tokens = cached_tokenize(tok, [c.text for c in caps], None)
    store = open_store(inputs["features"])
    config = setup.build_model(a, setup.region_dims(store, caps[0].image_key), None).config
    ds_a = setup.build_dataset(a, tokens, caps, store, config)
    ds_b = setup.build_dataset(b, tokens, caps, store, config)
    assert all(np.array_equal(ds_a[i]["text"], ds_b[i]["text"]) for i in range(len(ds_a)))


# -- --tokenized_input --------------------------------------------------------------------

def test_tokenized_input_takes_captions_as_vocabulary_tokens(inputs, tmp_path):
    """VLP: WhitespaceTokenizer().tokenize(raw) (text.strip().split()), then the BERT
    tokenizer's convert_tokens_to_ids; no word pieces and no lower-casing."""
    tok = load_tokenizer(inputs["bert"])
    vocab = tok.get_vocab()
    texts = ["  red circle  left of the\tsquare ", "[MASK] two big"]
    got = cached_tokenize(WhitespaceTokenizer(tok), texts, tmp_path)
    for i, text in enumerate(texts):
        assert list(got[i]) == [vocab[t] for t in text.strip().split()]
    # A word-piece run over the same texts is cached apart.
    cached_tokenize(tok, texts, tmp_path)
    assert len(list(tmp_path.glob("tokens-*"))) == 2
    # The word pieces would lower-case "Red"; VLP's whitespace tokens are taken as they are.
    assert list(cached_tokenize(tok, ["Red circle"], None)[0]) == [vocab["red"], vocab["circle"]]
    with pytest.raises(VLPError, match="'Red' of 'Red circle' is not in the vocabulary"):
        WhitespaceTokenizer(tok)(["Red circle"])


def test_tokenized_input_flag_reaches_the_training_tokens(inputs, tmp_path):
    args = parsed(inputs, tmp_path, "--tokenized_input")
    caps = setup.load_captions(args)
    tokens, tokenizer = setup.tokenize_captions(args, caps, inputs["bert"], True, lambda: None)
    vocab = tokenizer.get_vocab()
    assert [list(tokens[i]) for i in range(3)] == [[vocab[t] for t in caps[i].text.split()]
                                                   for i in range(3)]
    assert tokenizer.__class__.__name__.startswith("BertTokenizer")


# -- model flags through build_model ------------------------------------------------------

def build(inputs, tmp_path, *extra):
    args = parsed(inputs, tmp_path, *extra)
    store = open_store(inputs["features"])
    return setup.build_model(args, setup.region_dims(store, "img_0000"), None)


def test_config_path_gives_a_from_scratch_model_its_sizes(inputs, tmp_path):
    bert_config = {"hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 3,
                   "intermediate_size": 40, "hidden_act": "gelu", "vocab_size": 23,
                   "max_position_embeddings": 48, "type_vocab_size": 2,
                   "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                   "initializer_range": 0.02}
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(bert_config))
    c = build(inputs, tmp_path, "--from_scratch", "--config_path", str(path)).config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size,
            c.vocab_size, c.max_position_embeddings) == (24, 1, 3, 40, 23, 48)
    # BERT's weights do not fit those sizes: an error naming them (VLP skipped them).
    with pytest.raises(VLPError, match="model.safetensors: keys the model does not have"):
        build(inputs, tmp_path, "--config_path", str(path))
    with pytest.raises(VLPError, match="--config_path .*nope.json: no such file"):
        parsed(inputs, tmp_path, "--config_path", str(tmp_path / "nope.json"))


def test_max_position_embeddings_grows_berts_table_by_repetition(inputs, tmp_path):
    bert = BertModel.from_pretrained(inputs["bert"])
    table = bert.embeddings.position_embeddings.weight.detach()   # 64 rows
    model = build(inputs, tmp_path, "--max_position_embeddings", "150")
    ours = model.embeddings.position_embeddings.weight.detach()
    assert model.config.max_position_embeddings == 150
    assert torch.equal(ours, table[torch.arange(150) % 64])
    cut = build(inputs, tmp_path, "--max_position_embeddings", "30")
    assert torch.equal(cut.embeddings.position_embeddings.weight.detach(), table[:30])
    with pytest.raises(VLPError, match="= 21 positions; the model has 20"):
        build(inputs, tmp_path, "--max_position_embeddings", "20")


def test_relax_projection_and_vis_mask_prob_shape_a_model_from_bert(inputs, tmp_path):
    bert = BertModel.from_pretrained(inputs["bert"])
    model = build(inputs, tmp_path, "--relax_projection", "--vis_mask_prob", "0.4")
    c = model.config
    assert c.relax_projection == 4 and c.pooler
    # BERT's pooler, which VLP's model kept, starts the masked-region loss.
    assert torch.equal(model.pooler.dense.weight, bert.pooler.dense.weight)
    # The one projection BERT's head had is copied into each of the four (VLP).
    blocks = model.mlm_head.dense.weight.detach().unflatten(0, (4, 32))
    assert all(torch.equal(blocks[0], blocks[k]) for k in (1, 2, 3))
    plain = build(inputs, tmp_path)
    assert plain.config.relax_projection == 0 and plain.pooler is None


def test_vlp_bin_with_relax_projection_is_cut_to_the_runs_task_index(inputs, tmp_path):
    state = relaxed_state()
    torch.save(state, tmp_path / "model.1.bin")
    common = ("--model_recover_path", str(tmp_path / "model.1.bin"), "--config_path",
              str(config_json(tmp_path)), "--len_vis_input", "4", "--max_len_b", "8")
    args = parsed(inputs, tmp_path / "run", *common)
    dims = setup.RegionDims(feature_dim=6, num_classes=2)
    model = setup.build_model(args, dims, None)
    assert model.config.relax_projection == 0
    # VLP sized the table by the config (512 there): the file's 110 rows, repeated.
    table = state["bert.embeddings.position_embeddings.weight"]
    assert torch.equal(model.embeddings.position_embeddings.weight.detach(),
                       table[torch.arange(512) % 110])
    dense = state["cls.predictions.transform.dense.weight"]
    assert torch.equal(model.mlm_head.dense.weight, dense.unflatten(0, (4, 16))[3])
    kept = setup.build_model(parsed(inputs, tmp_path / "run", *common, "--relax_projection"),
                             dims, None)
    assert torch.equal(kept.mlm_head.dense.weight, dense)
    vqa = parsed(inputs, tmp_path / "vqa", *common, "--tasks", "vqa2")
    assert torch.equal(setup.build_model(vqa, dims, None).mlm_head.dense.weight,
                       dense.unflatten(0, (4, 16))[0])


# -- whole runs ---------------------------------------------------------------------------

def test_a_run_with_every_flag_trains_logs_and_resumes(inputs, tmp_path):
    out = tmp_path / "run"
    flags = ("--vis_mask_prob", "0.4", "--relax_projection", "--max_position_embeddings", "80",
             "--trunc_seg", "a", "--tokenized_input", "--log_steps", "1", "--drop_prob", "0")
    assert main(train_argv(inputs, out, *flags, "--max_steps", "1")) == 0
    saved = json.loads((out / "step.1" / "config.json").read_text())
    assert (saved["relax_projection"], saved["pooler"], saved["max_position_embeddings"]) \
        == (4, True, 80)
    rows = read_metrics(out)
    assert all(r["region_loss"] > 0 for r in rows)
    # The same command resumes; other model flags are refused, not silently applied.
    assert main(train_argv(inputs, out, *flags, "--max_steps", "3")) == 0
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3]
    assert main(train_argv(inputs, out, *flags[:2], "--max_steps", "4")) == 2
    weights = load_file(out / "step.3" / "model.safetensors")
    assert weights["mlm_head.dense.weight"].shape == (4 * 32, 32)


def test_block_masked_regions_needs_vis_mask_prob_and_scst_takes_neither(inputs, tmp_path):
    with pytest.raises(VLPError, match="--block_masked_regions needs --vis_mask_prob"):
        parsed(inputs, tmp_path, "--block_masked_regions")
    with pytest.raises(VLPError, match="not --scst"):
        parsed(inputs, tmp_path, "--vis_mask_prob", "0.2", "--scst", "--model_recover_path",
               str(tmp_path))
    assert parsed(inputs, tmp_path, "--vis_mask_prob", "0.2", "--block_masked_regions")


# -- vlp decode --config_path -------------------------------------------------------------

def relaxed_state() -> dict:
    state = vlp_state()
    g = torch.Generator().manual_seed(3)
    state["bert.embeddings.position_embeddings.weight"] = torch.randn(110, 16, generator=g)
    state["cls.predictions.transform.dense.weight"] = torch.randn(64, 16, generator=g)
    for name in ("dense.bias", "LayerNorm.weight", "LayerNorm.bias"):
        state[f"cls.predictions.transform.{name}"] = torch.randn(64, generator=g)
    return state


def config_json(tmp_path: Path, heads: int = 4) -> Path:
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps({"hidden_size": 16, "num_hidden_layers": 2,
                                "num_attention_heads": heads, "intermediate_size": 24,
                                "hidden_act": "gelu", "vocab_size": 120,
                                "max_position_embeddings": 512, "type_vocab_size": 2}))
    return path


def test_decode_config_path_sizes_a_vlp_bin_and_keeps_the_seq2seq_projection(tmp_path):
    state = relaxed_state()
    torch.save(state, tmp_path / "model.30.bin")
    model = load_model(tmp_path / "model.30.bin", None, config_json(tmp_path))
    assert model.config.num_attention_heads == 4   # not the stored-nowhere default 16 // 64
    # VLP's decoder had one projection: the seq2seq one (task_idx 3) of the four.
    assert model.config.relax_projection == 0
    dense = state["cls.predictions.transform.dense.weight"]
    assert torch.equal(model.mlm_head.dense.weight, dense.unflatten(0, (4, 16))[3])
    model.save_pretrained(tmp_path / "converted")
    with pytest.raises(VLPError, match="num_attention_heads 2 \\(the model has 4\\)"):
        load_model(tmp_path / "converted", None, config_json(tmp_path / "converted", heads=2))
    again = load_model(tmp_path / "converted", None, config_json(tmp_path))
    assert again.config.num_attention_heads == 4


# -- the tasks ------------------------------------------------------------------------------

def test_vqa_adds_vlps_masked_region_loss_and_unused_poolers_are_frozen():
    from vlp.model import UnifiedVLP, VLPConfig
    from vlp.train.tasks import MaskedLMTask, freeze_unused
    from vlp.train.vqa import VQATask

    model = UnifiedVLP(VLPConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=24,
                                 max_position_embeddings=24, region_feature_dim=6,
                                 region_classes=2, max_regions=5, cls_token_id=1,
                                 sep_token_id=2, mask_token_id=3, vqa_answers=7,
                                 pooler=True)).eval()
    g = torch.Generator().manual_seed(0)
    x = dict(text_ids=torch.randint(5, 40, (2, 4), generator=g), text_lengths=torch.tensor([4, 3]),
             region_features=torch.randn(2, 5, 6, generator=g),
             region_locations=torch.randn(2, 5, 8, generator=g), num_regions=torch.tensor([5, 4]),
             targets=torch.rand(2, 7, generator=g))
    hide = torch.zeros(2, 5, dtype=torch.bool)
    hide[0, [1, 4]] = True
    hide[1, [0, 2]] = True
    unused = dict(mask_order=None, mask_kind=None, mask_coin=None, mask_random_ids=None,
                  s2s_draw=torch.ones(2))  # at or above any s2s_prob: bidirectional
    task = VQATask(model, mask_input=False, masks_regions=True)
    with torch.no_grad():
        out = task(**x, **unused, region_masked=hide)
        s2s = torch.zeros(2, dtype=torch.bool)
        hidden, parts = model.encode(*(x[k] for k in ("text_ids", "text_lengths",
                                                       "region_features", "region_locations",
                                                       "num_regions")), s2s, region_masked=hide)
        region = model.masked_region_loss(hidden, parts, hide)
        plain = task(**x, **unused)
    assert abs(float(out["region_loss"]) - float(region)) < 1e-6
    assert abs(float(out["loss"]) - float(out["vqa_loss"] + region)) < 1e-6
    assert set(plain) == {"loss"}
    freeze_unused(task)
    assert model.pooler.dense.weight.requires_grad
    freeze_unused(MaskedLMTask(model))
    assert not model.pooler.dense.weight.requires_grad


def test_two_ranks_mask_the_same_regions_as_one_process(inputs, tmp_path):
    """The masked regions are each example's own draws: 2 ranks x batch 4 end with the
    weights of 1 process x batch 8."""
    from test_train_runs import free_port, ranks, with_batch

    flags = ("--num_train_epochs", "1", "--vis_mask_prob", "0.5", "--relax_projection",
             "--drop_prob", "0", "--log_steps", "1")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(train_argv(inputs, one, *flags)) == 0
    procs = ranks(with_batch(train_argv(inputs, two, *flags), 4), 2, free_port(),
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    a, b = (load_file(run / "model.1" / "model.safetensors") for run in (one, two))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert read_metrics(one)[-1]["region_loss"] > 0
