"""`vlp decode` on a trained tiny run: results files, cache vs recompute, globs, bad input."""

from __future__ import annotations

import json

import pytest

from train_fixtures import captions_json, make_inputs, train_argv
from vlp.cli.decode import main as decode_main
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
