"""`vlp decode` on a trained tiny run: results files, cache vs recompute, globs, bad input,
the references' grounding figures."""

from __future__ import annotations

import json

import pytest
import torch

from train_fixtures import captions_json, make_inputs, train_argv
from vlp.cli.decode import main as decode_main
from vlp.data.captions import Caption, read_captions
from vlp.data.features import open_store
from vlp.data.tokens import load_tokenizer
from vlp.errors import VLPError
from vlp.eval.grounding import other_images, score_references
from vlp.model import UnifiedVLP
from vlp.train.main import main as train_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    inputs = make_inputs(root, images=8)
    assert train_main(train_argv(inputs, root / "run", "--num_train_epochs", "2")) == 0
    return inputs, root / "run"


def decode_argv(inputs, checkpoint, out, *extra):
    return ["--model_recover_path", str(checkpoint), "--src_file", str(inputs["src"]),
            "--features", str(inputs["features"]), "--split", "train", "--len_vis_input", "8",
            "--max_tgt_length", "6", "--output_dir", str(out), "--num_workers", "0",
            "--no_progress", "--no_eval", *extra]


def test_results_cover_the_split_and_match_without_the_cache(trained, tmp_path):
    inputs, run = trained
    assert decode_main(decode_argv(inputs, run / "model.2", tmp_path, "--beam_size", "3")) == 0
    results = json.loads((tmp_path / "model.2.train.beam3.results.json").read_text())
    assert [r["image_id"] for r in results] == list(range(8))
    assert all(isinstance(r["caption"], str) for r in results)
    slow = tmp_path / "slow"
    assert decode_main(decode_argv(inputs, run / "model.2", slow, "--beam_size", "3",
                                   "--no_kv_cache")) == 0
    assert json.loads((slow / "model.2.train.beam3.results.json").read_text()) == results
    # VLP's decode_img2txt.py flags that change nothing here are taken, with the same output.
    vlp = tmp_path / "vlp"
    assert decode_main(decode_argv(inputs, run / "model.2", vlp, "--beam_size", "3",
                                   "--drop_prob", "0.1", "--max_position_embeddings", "512",
                                   "--enable_butd", "--new_segment_ids")) == 0
    assert json.loads((vlp / "model.2.train.beam3.results.json").read_text()) == results


def test_a_glob_decodes_every_checkpoint(trained, tmp_path):
    inputs, run = trained
    assert decode_main(decode_argv(inputs, run / "model.*", tmp_path)) == 0
    assert sorted(p.name for p in tmp_path.glob("*.results.json")) == [
        "model.1.train.beam1.results.json", "model.2.train.beam1.results.json"]


def test_missing_images_and_checkpoints_are_named(trained, tmp_path, capsys):
    inputs, run = trained
    more = captions_json(tmp_path / "more.json", images=12)
    argv = decode_argv(inputs, run / "model.2", tmp_path)
    argv[argv.index("--src_file") + 1] = str(more)
    assert decode_main(argv) == 2
    err = capsys.readouterr().err
    assert "4 of 12 images have no features" in err and "img_0008" in err
    assert decode_main(argv + ["--skip_missing_features"]) == 0
    assert len(json.loads((tmp_path / "model.2.train.beam1.results.json").read_text())) == 8
    assert decode_main(decode_argv(inputs, run / "model.9", tmp_path)) == 2
    assert "no checkpoint matches" in capsys.readouterr().err


def test_metrics_are_written_beside_the_results(trained, tmp_path):
    inputs, run = trained
    argv = [a for a in decode_argv(inputs, run / "model.2", tmp_path) if a != "--no_eval"]
    assert decode_main(argv + ["--no_java"]) == 0
    metrics = json.loads((tmp_path / "model.2.train.beam1.metrics.json").read_text())
    assert {"CIDEr", "Bleu_4", "ROUGE_L"} <= metrics.keys()
    assert all(0.0 <= metrics[k] for k in ("CIDEr", "Bleu_4", "ROUGE_L"))


def test_grounding_scores_every_reference_token_with_own_and_other_regions(trained, tmp_path):
    inputs, run = trained
    assert decode_main(decode_argv(inputs, run / "model.2", tmp_path, "--grounding")) == 0
    g = json.loads((tmp_path / "model.2.train.grounding.json").read_text())
    # 8 images x 2 captions of 6 words, cut to 5 words + [SEP] by --max_tgt_length 6.
    assert (g["captions"], g["tokens"], g["truncated"]) == (16, 96, 16)
    assert g["own"] < 0 and g["other"] < 0 and g["own"] != g["other"]
    assert g["gain"] == pytest.approx(g["own"] - g["other"])


def test_a_model_blind_to_its_regions_gains_nothing_from_them(trained):
    inputs, run = trained
    model = UnifiedVLP.from_pretrained(run / "model.2").train()
    captions = read_captions([inputs["src"]], ("train",))
    tokenizer = load_tokenizer(run / "model.2")
    # Four regions of every image (the store's have five or four), so the other image
    # differs only in what its regions show.
    with open_store(inputs["features"]) as store:
        torch.manual_seed(0)
        with torch.no_grad():  # livelier than the tiny run, which learnt random captions
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.2)
        seeing = score_references(model, captions, store, tokenizer, regions=4, max_length=8)
        with torch.no_grad():
            for p in model.region.parameters():
                p.zero_()
        blind = score_references(model, captions, store, tokenizer, regions=4, max_length=8)
    assert abs(seeing.gain) > 1e-3
    assert blind.gain == pytest.approx(0.0, abs=1e-6)
    assert model.training  # scored in eval mode, handed back as it came


def test_another_image_is_always_a_different_one():
    keys = ["a", "a", "b", "c", "b", "d"]
    other = other_images(keys)
    assert set(other) == set(other.values()) == set(keys)
    assert all(k != v for k, v in other.items())
    assert other_images(["x", "y", "x"]) == {"x": "y", "y": "x"}
    with pytest.raises(VLPError, match="two images or more"):
        other_images(["x", "x"])
    with pytest.raises(VLPError, match="two images or more"):
        score_references(None, [Caption("x", 1, "a red circle")], {}, None, regions=4)


def test_an_ignored_word_outside_the_vocabulary_is_named(trained, tmp_path, capsys):
    """VLP mapped it to [UNK] and ignored nothing; here the flag's word is named."""
    inputs, run = trained
    argv = decode_argv(inputs, run / "model.2", tmp_path, "--beam_size", "2",
                       "--forbid_duplicate_ngrams", "--forbid_ignore_word", "[sep]|qqqzzz")
    assert decode_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--forbid_ignore_word: qqqzzz not in the vocabulary" in err and "\n" not in err
    assert not list(tmp_path.glob("*.results.json"))
