"""VLP's README command lines, run as written on data in VLP's layout (tests/vlp_layout.py):
only the paths change, `--bert_model` is added (nothing downloads), and a few flags shrink
the runs (one epoch, small batches, no loader workers). The commands chain as in VLP's
README: each names the previous run's `model.N.bin`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vlp_layout

SHRINK = ["--num_train_epochs", "1", "--train_batch_size", "4", "--num_workers", "0"]


def run(main, argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """One VLP-style entry point in this process, from `cwd` (VLP read detectron_weights/
    and pythia/ relative to its code root)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def train(argv, cwd):
    from vlp.train.main import main

    return run(lambda a: main(a, prog="python vlp/run_img2txt_dist.py"), argv, cwd)


def decode(argv, cwd):
    from vlp.cli.decode import main

    return run(lambda a: main(a, prog="python vlp/decode_img2txt.py"), argv, cwd)


def eval_vqa(argv, cwd):
    from vlp.cli.eval_vqa import main

    return run(lambda a: main(a, prog="python vlp/eval_vqa2.py"), argv, cwd)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return vlp_layout.write(tmp_path_factory.mktemp("vlp"))


def cc_command(p, output_dir) -> list[str]:
    return ["--output_dir", str(output_dir), "--model_recover_path", str(p["unilm"]),
            "--do_train", "--learning_rate", "1e-4", "--new_segment_ids",
            "--always_truncate_tail", "--amp", "--src_file", str(p["cc_json"]),
            "--dataset", "cc", "--split", "train", "--file_valid_jpgs", str(p["cc_valid"]),
            "--local_rank", "-1", "--global_rank", "-1", "--world_size", "1", "--enable_butd",
            "--s2s_prob", "0.75", "--bi_prob", "0.25", "--image_root", str(p["cc_root"]),
            "--region_bbox_file", vlp_layout.CC_BBOX,
            "--region_det_file_prefix", vlp_layout.CC_PREFIX, "--bert_model", str(p["bert"])]


def coco_command(p, output_dir, recover) -> list[str]:
    return ["--output_dir", str(output_dir), "--model_recover_path", str(recover),
            "--do_train", "--new_segment_ids", "--always_truncate_tail", "--amp",
            "--src_file", str(p["coco_json"]), "--file_valid_jpgs", str(p["coco_valid"]),
            "--image_root", str(p["coco_root"]), "--enable_butd", "--s2s_prob", "1",
            "--bi_prob", "0", "--bert_model", str(p["bert"])]


@pytest.fixture(scope="module")
def cc(roots):
    out = roots["ckpt"] / "cc"
    code, stdout, stderr = train(cc_command(roots, out) + SHRINK, roots["code"])
    assert code == 0, stderr[-3000:]
    return out, stdout


@pytest.fixture(scope="module")
def coco_ce(roots, cc):
    out = roots["ckpt"] / "coco_ce"
    code, stdout, stderr = train(coco_command(roots, out, cc[0] / "model.1.bin") + SHRINK,
                                 roots["code"])
    assert code == 0, stderr[-3000:]
    return out, stdout


@pytest.fixture(scope="module")
def vqa(roots, cc):
    out = roots["ckpt"] / "vqa2"
    argv = ["--output_dir", str(out), "--model_recover_path", str(cc[0] / "model.1.bin"),
            "--do_train", "--learning_rate", "2e-5", "--new_segment_ids",
            "--always_truncate_tail", "--amp", "--num_train_epochs", "20", "--enable_butd",
            "--s2s_prob", "0", "--bi_prob", "1", "--image_root", str(roots["coco_root"]),
            "--tasks", "vqa2",
            "--src_file", str(roots["code"] / "pythia/data/imdb/vqa/imdb_train2014.npy"),
            "--file_valid_jpgs", str(roots["coco_valid"]), "--mask_prob", "0", "--max_pred",
            "1", "--bert_model", str(roots["bert"])]
    code, stdout, stderr = train(argv + SHRINK, roots["code"])
    assert code == 0, stderr[-3000:]
    return out, stdout


def test_cc_pretraining_starts_from_unilm_bin_and_detectron_fc7(roots, cc):
    out, stdout = cc
    assert "--amp without --fp16 trains in float32, as in VLP" in stdout
    assert "precision fp32" in stdout
    assert "10 captions of 10 images" in stdout  # every CC image is in the valid object
    config = json.loads((out / "model.1" / "config.json").read_text())
    # VLP's LayerNorm eps, the BERT directory's heads and ids, the float16 release's sizes.
    assert config["layer_norm_eps"] == 1e-5 and config["num_attention_heads"] == 4
    assert (config["region_feature_dim"], config["region_classes"]) == (vlp_layout.D,
                                                                         vlp_layout.C)
    assert config["hidden_dropout_prob"] == 0.1


def test_the_model_vlp_builds_for_pretraining(roots):
    """Before any step: text from the UniLM .bin (not --bert_model's weights), the first
    region layer from detectron_weights/fc7_*.pkl, the other region layers PyTorch's
    default init (uniform within 1/sqrt(fan_in)), LayerNorm eps 1e-5."""
    from vlp.train.args import build_parser, check
    from vlp.train.setup import RegionDims, build_model

    args = check(build_parser().parse_args(cc_command(roots, roots["ckpt"] / "unused")))
    with contextlib.chdir(roots["code"]):
        model = build_model(args, RegionDims(vlp_layout.D, vlp_layout.C), None)
    unilm = torch.load(roots["unilm"], weights_only=True)
    torch.testing.assert_close(model.embeddings.word_embeddings.weight,
                               unilm["bert.embeddings.word_embeddings.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.encoder.layer[1].output.dense.weight,
                               unilm["bert.encoder.layer.1.output.dense.weight"], rtol=0, atol=0)
    np.testing.assert_array_equal(model.region.feature[0].weight.detach().numpy(),
                                  roots["fc7_w"])
    location = model.region.location[0].weight
    bound = 1 / np.sqrt(location.shape[1])
    location = location.detach()
    assert float(location.abs().max()) <= bound and float(location.std()) > 0.5 * bound / np.sqrt(3)
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, torch.nn.LayerNorm))
    assert model.config.num_attention_heads == 4 and model.config.cls_token_id == 2


def test_without_detectron_weights_the_error_names_the_path_and_the_flag(roots, tmp_path):
    out = tmp_path / "cc"
    code, _, stderr = train(cc_command(roots, out) + SHRINK, tmp_path)
    assert code == 2
    line = stderr.strip().splitlines()[-1]
    assert str(tmp_path / "detectron_weights" / "fc7_w.pkl") in line and "--region_fc7" in line
    assert not (out / "model.1").exists()


def test_coco_finetuning_chains_from_the_cc_run_by_its_bin_name(roots, cc, coco_ce):
    out, stdout = coco_ce
    # 5 train + 2 restval images have features and are in the valid object; 2 captions each.
    assert "14 captions of 7 images" in stdout
    assert (out / "model.1" / "model.safetensors").is_file()
    assert not (cc[0] / "model.1.bin").exists()  # one copy on disk: model.1/


def test_two_explicit_ranks_without_dist_url_meet_in_the_output_dir(roots, cc):
    """VLP's 2-GPU README command: --local_rank/--global_rank/--world_size only, so the
    default file:// rendezvous inside --output_dir (which does not exist yet)."""
    out = roots["ckpt"] / "coco_ce_2gpu"
    argv = coco_command(roots, out, cc[0] / "model.1.bin") + SHRINK[:2] + [
        "--train_batch_size", "2", "--num_workers", "0", "--no_progress"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    procs = [subprocess.Popen([sys.executable, "-m", "vlp.run_img2txt_dist", *argv,
                               "--local_rank", str(r), "--global_rank", str(r),
                               "--world_size", "2", "--dist_timeout", "120"],
                              cwd=roots["code"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    assert "2 process(es) x batch 2" in results[0][0]
    assert (out / "model.1" / "model.safetensors").is_file()
    # PyTorch's file:// rendezvous needs a fresh file: a stale one made the next run in
    # this directory (a resume, one more epoch) wait forever.
    assert not (out / "nonexistent_file").exists()


def test_scst_as_the_readme_describes_it(roots, coco_ce):
    out = roots["ckpt"] / "coco_scst"
    argv = coco_command(roots, out, coco_ce[0] / "model.1.bin") + [
        "--max_pred", "0", "--mask_prob", "0", "--scst", "--learning_rate", "1e-6"] + SHRINK + [
        "--log_steps", "1"]
    code, stdout, stderr = train(argv, roots["code"])
    assert code == 0, stderr[-3000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log and all("reward" in row for row in log if "loss" in row)


def test_flickr30k_finetuning_reads_per_image_npy(roots, cc):
    out = roots["ckpt"] / "flickr30k"
    argv = ["--output_dir", str(out), "--model_recover_path", str(cc[0] / "model.1.bin"),
            "--do_train", "--new_segment_ids", "--always_truncate_tail", "--amp",
            "--image_root", str(roots["flickr_root"]), "--enable_butd", "--s2s_prob", "1",
            "--bi_prob", "0", "--dataset", "flickr30k",
            "--region_bbox_file", vlp_layout.FLICKR_BBOX, "--src_file",
            str(roots["flickr_json"]), "--file_valid_jpgs", str(roots["flickr_valid"]),
            "--bert_model", str(roots["bert"])]
    code, stdout, stderr = train(argv + SHRINK, roots["code"])
    assert code == 0, stderr[-3000:]
    assert "8 captions of 4 images" in stdout
    decoded = decode_flickr(roots, out / "model.1.bin", "test")
    assert len(decoded) == 1


def decode_flickr(roots, checkpoint, split):
    argv = ["--model_recover_path", str(checkpoint), "--new_segment_ids", "--batch_size",
            "100", "--beam_size", "5", "--enable_butd", "--image_root",
            str(roots["flickr_root"]) + "/", "--split", split, "--dataset", "flickr30k",
            "--region_bbox_file", vlp_layout.FLICKR_BBOX, "--src_file",
            str(roots["flickr_json"]), "--file_valid_jpgs", str(roots["flickr_valid"])]
    code, stdout, stderr = decode(argv, roots["code"])
    assert code == 0, stderr[-3000:]
    assert "--file_valid_jpgs is not used for --dataset flickr30k (as in VLP)" in stderr
    results = Path(checkpoint).with_suffix("").parent / \
        f"model.1.{split}.beam5.results.json"
    return json.loads(results.read_text())


def coco_decode_argv(roots, checkpoint, split="test", beam=5) -> list[str]:
    return ["--model_recover_path", str(checkpoint), "--new_segment_ids", "--batch_size",
            "100", "--beam_size", str(beam), "--enable_butd", "--image_root",
            str(roots["coco_root"]) + "/", "--split", split, "--src_file",
            str(roots["coco_json"]), "--file_valid_jpgs", str(roots["coco_valid"])]


def test_coco_decoding_from_a_model_bin_name(roots, coco_ce):
    argv = coco_decode_argv(roots, coco_ce[0] / "model.1.bin")
    code, stdout, stderr = decode(argv, roots["code"])
    assert code == 0, stderr[-3000:]
    assert "--file_valid_jpgs is not used for --dataset coco (as in VLP)" in stderr
    results = json.loads((coco_ce[0] / "model.1.test.beam5.results.json").read_text())
    assert sorted(r["image_id"] for r in results) == [110, 111]
    assert all(isinstance(r["caption"], str) for r in results)


def to_vlp_bin(checkpoint: Path, path: Path) -> Path:
    """The checkpoint's weights under VLP's names, as its model.N.bin held them."""
    from safetensors.torch import load_file

    renames = (("embeddings.", "bert.embeddings."), ("encoder.", "bert.encoder."),
               ("mlm_head.bias", "cls.predictions.bias"),
               ("mlm_head.", "cls.predictions.transform."),
               ("region.feature.", "vis_embed."), ("region.location.", "vis_pe_embed."),
               ("vqa_head.", "ans_classifier."))
    state = {}
    for key, value in load_file(str(checkpoint / "model.safetensors")).items():
        for ours, theirs in renames:
            if key.startswith(ours):
                state[theirs + key[len(ours):]] = value
                break
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    torch.save(state, path)
    return path


def test_a_vlp_bin_takes_heads_and_ids_from_bert_model(roots, coco_ce, tmp_path):
    """VLP's model.N.bin stores no head count: decoded with --bert_model, it captions as
    the checkpoint it came from; hidden/64 heads would not."""
    vlp_bin = to_vlp_bin(coco_ce[0] / "model.1", tmp_path / "model.1.bin")
    argv = coco_decode_argv(roots, vlp_bin, split="val", beam=1)
    code, _, stderr = decode(argv + ["--bert_model", str(roots["bert"])], roots["code"])
    assert code == 0, stderr[-3000:]
    ours = coco_decode_argv(roots, coco_ce[0] / "model.1", split="val", beam=1)
    assert decode(ours + ["--output_dir", str(tmp_path / "dir")], roots["code"])[0] == 0
    from_bin = json.loads((tmp_path / "model.1.val.beam1.results.json").read_text())
    from_dir = json.loads((tmp_path / "dir" / "model.1.val.beam1.results.json").read_text())
    assert from_bin == from_dir
    from vlp.model.load import load

    assert load(vlp_bin, roots["bert"]).config.num_attention_heads == 4
    code, _, stderr = decode(argv, roots["code"])  # no vocabulary, no heads: one line
    assert code == 2 and "pass --bert_model" in stderr.strip().splitlines()[-1]


def test_vqa_finetuning_from_the_imdb_and_evaluation_with_split(roots, vqa):
    out, stdout = vqa
    assert "14 questions of 7 images" in stdout
    # Pythia's list where VLP read it, <unk> first, kept with the run.
    assert "pythia/data/vocabs/answers_vqa.txt (VLP's" in stdout
    assert json.loads((out / "answer_vocab.json").read_text())["answers"][:2] == ["<unk>", "red"]
    imdb_val = roots["code"] / "pythia/data/imdb/vqa/imdb_val2014.npy"
    argv = ["--model_recover_path", str(out / "model.1.bin"), "--new_segment_ids",
            "--enable_butd", "--image_root", str(roots["coco_root"]) + "/", "--src_file",
            str(imdb_val), "--batch_size", "50", "--file_valid_jpgs", str(roots["coco_valid"]),
            "--split", "val2014"]
    code, stdout, stderr = eval_vqa(argv, roots["code"])
    assert code == 0, stderr[-3000:]
    results = json.loads((out / "model.1.val2014.vqa_results.json").read_text())
    assert len(results) == 8 and all(r["answer"] != "<unk>" for r in results)
    # As VLP: the imdb names the questions, the official annotations score them, from
    # --ref_file or, for val2014, VLP's default pythia/data/v2_mscoco_val2014_annotations.json.
    assert "(VLP's default --ref_file)" in stderr
    assert "number" in stdout and "other" in stdout
    code, with_ref, stderr = eval_vqa(argv + ["--ref_file", str(roots["vqa_ref"])],
                                      roots["code"])
    assert code == 0, stderr[-3000:]
    assert with_ref.splitlines()[-3:] == stdout.splitlines()[-3:]


# -- VLP files in the wrong shape: one line naming the file, nothing trained ------------

def test_a_valid_jpgs_file_that_is_neither_object_nor_list(roots, tmp_path):
    bad = tmp_path / "coco_valid_jpgs.json"
    bad.write_text(json.dumps("COCO_train2014_000000000101.jpg"))
    argv = coco_command(roots, tmp_path / "run", roots["ckpt"] / "cc" / "model.1.bin")
    argv[argv.index("--file_valid_jpgs") + 1] = str(bad)
    code, _, stderr = train(argv + SHRINK, roots["code"])
    line = stderr.strip().splitlines()[-1]
    assert code == 2 and str(bad) in line and "JSON object keyed by image file name" in line
    assert not (tmp_path / "run" / "model.1").exists()


def test_an_imdb_without_its_header(roots, tmp_path):
    from vlp.data.vqa import read_imdb

    good = roots["code"] / "pythia/data/imdb/vqa/imdb_val2014.npy"
    headless = tmp_path / "imdb_val2014.npy"
    np.save(headless, np.load(good, allow_pickle=True)[1:])
    with pytest.raises(Exception, match=f"{headless}: entry 0 is a question, not the imdb header"):
        read_imdb(headless)


def test_a_bin_with_keys_of_neither_layout(roots, tmp_path):
    state = torch.load(roots["unilm"], weights_only=True)
    state["bert.encoder.layer.0.adapter.weight"] = torch.zeros(2)
    odd = tmp_path / "model_153999_cpu.bin"
    torch.save(state, odd)
    argv = cc_command(roots, tmp_path / "run")
    argv[argv.index("--model_recover_path") + 1] = str(odd)
    code, _, stderr = train(argv + SHRINK, roots["code"])
    line = stderr.strip().splitlines()[-1]
    assert code == 2 and str(odd) in line and "encoder.layer.0.adapter.weight" in line
    assert not (tmp_path / "run" / "model.1").exists()


def test_vqa_evaluation_of_a_vlp_bin_reads_pythias_answer_list(roots, vqa, tmp_path):
    """A VQA model.N.bin as VLP saved it (ans_classifier, no answer list, no heads):
    heads from --bert_model, answers from pythia/data/vocabs/answers_vqa.txt under the
    working directory, as VLP's eval_vqa2.py; the same answers as the run's directory."""
    vlp_bin = to_vlp_bin(vqa[0] / "model.1", tmp_path / "model.1.bin")
    imdb_val = roots["code"] / "pythia/data/imdb/vqa/imdb_val2014.npy"
    common = ["--new_segment_ids", "--enable_butd", "--image_root", str(roots["coco_root"]),
              "--src_file", str(imdb_val), "--batch_size", "50", "--split", "val2014"]
    code, _, stderr = eval_vqa(["--model_recover_path", str(vlp_bin), "--bert_model",
                                str(roots["bert"]), *common], roots["code"])
    assert code == 0, stderr[-3000:]
    code, _, stderr = eval_vqa(["--model_recover_path", str(vqa[0] / "model.1"),
                                "--output_dir", str(tmp_path / "dir"), *common], roots["code"])
    assert code == 0, stderr[-3000:]
    from_bin = json.loads((tmp_path / "model.1.val2014.vqa_results.json").read_text())
    from_dir = json.loads((tmp_path / "dir" / "model.1.val2014.vqa_results.json").read_text())
    assert from_bin == from_dir and len(from_bin) == 8
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, _, stderr = eval_vqa(["--model_recover_path", str(vlp_bin), "--bert_model",
                                str(roots["bert"]), *common], elsewhere)
    assert code == 2 and "--answer_vocab" in stderr.strip().splitlines()[-1]


def test_detectron_fc7_of_another_size_names_the_file_and_trains_nothing(roots, tmp_path):
    import pickle

    code_root = tmp_path / "code"
    (code_root / "detectron_weights").mkdir(parents=True)
    for name, value in (("fc7_w.pkl", np.zeros((2048, 2048), np.float32)),
                        ("fc7_b.pkl", np.zeros(2048, np.float32))):
        with open(code_root / "detectron_weights" / name, "wb") as f:
            pickle.dump(value, f, protocol=2)
    out = tmp_path / "cc"
    code, _, stderr = train(cc_command(roots, out) + SHRINK, code_root)
    line = stderr.strip().splitlines()[-1]
    assert code == 2 and "--enable_butd" in line and "detectron_weights" in line
    assert "(2048, 2048)" in line and not (out / "model.1").exists()


def test_a_bert_directory_that_says_nothing_about_case_keeps_it(tmp_path):
    """VLP lower-cased only with --do_lower_case; a BERT directory without
    tokenizer_config.json (BERT's own releases) is cased, whatever transformers assumes."""
    from vlp.data.tokens import load_tokenizer

    (tmp_path / "vocab.txt").write_text("\n".join(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Red", "red", "circle"]) + "\n")
    cased = load_tokenizer(tmp_path)
    assert cased("Red circle", add_special_tokens=False)["input_ids"] == [5, 7]
    lower = load_tokenizer(tmp_path, do_lower_case=True)
    assert lower("Red circle", add_special_tokens=False)["input_ids"] == [6, 7]


def test_use_num_imgs_counts_questions_in_vqa(roots):
    """VLP's --use_num_imgs took the first N questions of the imdb files for VQA."""
    from vlp.train.args import build_parser, check
    from vlp.train.vqa import load_questions

    imdb = roots["code"] / "pythia/data/imdb/vqa/imdb_train2014.npy"
    argv = ["--output_dir", "unused", "--do_train", "--tasks", "vqa2", "--src_file", str(imdb),
            "--image_root", str(roots["coco_root"]), "--bert_model", str(roots["bert"]),
            "--use_num_imgs", "5"]
    questions, examples = load_questions(check(build_parser().parse_args(argv)))
    assert [q.image_id for q in questions] == [e.question_id for e in examples][:5]
    assert len(questions) == 5 and questions[0].image_id == 101000
