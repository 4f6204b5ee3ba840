"""VQA finetuning and evaluation end to end on tiny inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train_fixtures import make_inputs, vqa_argv, vqa_files
from vlp.data.captions import image_key_map
from vlp.data.vqa import read_vqa
from vlp.errors import VLPError
from vlp.cli.eval_vqa import main as eval_main
from vlp.train.args import build_parser, check
from vlp.train.main import main as train_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqa")
    inputs = make_inputs(root, images=48)
    files = vqa_files(root, inputs["features"], 48)
    # The head at 5x the encoder's rate: at one rate the yes/no answer was learned for
    # some seeds only (the others stayed at the majority answer). BertAdam, without bias
    # correction, stayed there at twice these rates; at these it learned it for 4 seeds of 4.
    argv = vqa_argv(inputs, files, root / "run", "--num_train_epochs", "40",
                    "--learning_rate", "1e-3", "--head_learning_rate", "5e-3",
                    "--sche_mode", "warmup_constant", "--warmup_proportion", "0.02",
                    "--log_steps", "1000")
    argv[argv.index("--train_batch_size") + 1] = "16"
    assert train_main(argv) == 0
    return inputs, files, root


def eval_argv(inputs, files, checkpoint, *extra):
    return ["--model_recover_path", str(checkpoint), "--src_file", str(files["questions"]),
            "--image_map", str(inputs["src"]), "--features", str(inputs["features"]),
            "--len_vis_input", "8", "--no_progress", "--num_workers", "0", *extra]


def test_a_tiny_model_learns_the_image_dependent_answer(trained, capsys):
    inputs, files, root = trained
    ckpt = root / "run" / "model.40"
    # Pythia's rule: multiple_choice_answers of 9 or more questions, sorted, <unk> first
    assert json.loads((ckpt / "answer_vocab.json").read_text())["answers"] == [
        "<unk>", "no", "red", "yes"]
    assert eval_main(eval_argv(inputs, files, ckpt, "--split", "train", "--vqa_annotations",
                               str(files["annotations"]))) == 0
    metrics = json.loads((root / "run" / "model.40.train.vqa_metrics.json").read_text())
    # yes/no is decided by the first region's features: chance is about 60% (the majority).
    assert metrics["perAnswerType"]["yes/no"] >= 80.0
    assert metrics["perAnswerType"]["other"] == 100.0
    assert "overall:" in capsys.readouterr().out


def test_vlp_eval_vqa2_flags_score_the_same(trained, tmp_path):
    """VLP's eval_vqa2.py spelling: --ref_file, --max_tgt_length and its unused decoding
    flags; the scores equal those of our own flags."""
    inputs, files, root = trained
    ckpt = root / "run" / "model.40"
    ours, vlp = tmp_path / "ours", tmp_path / "vlp"
    assert eval_main(eval_argv(inputs, files, ckpt, "--split", "val", "--output_dir", str(ours),
                               "--vqa_annotations", str(files["annotations"]))) == 0
    argv = eval_argv(inputs, files, ckpt, "--split", "val", "--output_dir", str(vlp),
                     "--ref_file", str(files["annotations"]), "--max_tgt_length", "20",
                     "--fp16", "--amp", "--seed", "123", "--drop_prob", "0.1", "--beam_size", "1",
                     "--length_penalty", "0", "--forbid_duplicate_ngrams", "--min_len", "2",
                     "--ngram_size", "3", "--forbid_ignore_word", ".", "--enable_butd",
                     "--new_segment_ids")
    assert eval_main(argv) == 0
    (a,), (b,) = ours.glob("*vqa_metrics.json"), vlp.glob("*vqa_metrics.json")
    assert json.loads(a.read_text()) == json.loads(b.read_text())
    assert json.loads(a.read_text())["perAnswerType"]["other"] == 100.0


def test_test_dev_writes_a_checked_leaderboard_file(trained, tmp_path):
    inputs, files, root = trained
    assert eval_main(eval_argv(inputs, files, root / "run" / "model.40", "--split", "test-dev",
                               "--output_dir", str(tmp_path))) == 0
    out = tmp_path / "vqa_OpenEnded_mscoco_test-dev2015_vlp_results.json"
    rows = json.loads(out.read_text())
    assert len(rows) == 96 and {r["answer"] for r in rows} <= {"red", "no", "yes"}


def test_unk_is_never_the_answer(trained, tmp_path):
    """VLP answered with argmax(logits[:, 1:]) + 1: even a head whose <unk> logit dwarfs
    every other answers each question with a real answer."""
    import shutil

    from safetensors.torch import load_file, save_file

    inputs, files, root = trained
    ckpt = tmp_path / "model.40"
    shutil.copytree(root / "run" / "model.40", ckpt)
    weights = load_file(ckpt / "model.safetensors")
    last = max((k for k in weights if k.startswith("vqa_head.") and k.endswith(".bias")),
               key=lambda k: int(k.split(".")[1]))
    weights[last][0] = 1e4  # index 0 is <unk>
    save_file(weights, ckpt / "model.safetensors")
    assert eval_main(eval_argv(inputs, files, ckpt, "--split", "val", "--output_dir",
                               str(tmp_path), "--vqa_annotations", str(files["annotations"]))) == 0
    rows = json.loads((tmp_path / "model.40.val.vqa_results.json").read_text())
    assert len(rows) == 96 and "<unk>" not in {r["answer"] for r in rows}
    metrics = json.loads((tmp_path / "model.40.val.vqa_metrics.json").read_text())
    assert metrics["perAnswerType"]["other"] == 100.0  # the other answers are untouched


def test_all_answers_vocabulary_keeps_the_earlier_rule(tmp_path):
    """--answer_vocab_from all_answers: the --num_answers most frequent annotators'
    answers, no <unk>; each rule refuses the other's size flag."""
    inputs = make_inputs(tmp_path, images=8)
    files = vqa_files(tmp_path, inputs["features"], 8)
    out = tmp_path / "run"
    argv = vqa_argv(inputs, files, out, "--num_train_epochs", "1",
                    "--answer_vocab_from", "all_answers", "--num_answers", "2")
    assert train_main(argv) == 0
    answers = json.loads((out / "model.1" / "answer_vocab.json").read_text())["answers"]
    # 8 questions answered "red" ten times; yes and no share the other 8
    counts = {a: sum(x["answer"] == a for ann in json.loads(files["annotations"].read_text())
                     ["annotations"] for x in ann["answers"]) for a in ("red", "yes", "no")}
    assert answers == sorted(counts, key=lambda a: (-counts[a], a))[:2] and answers[0] == "red"
    with pytest.raises(VLPError, match="--num_answers does not apply"):
        check(build_parser().parse_args(vqa_argv(inputs, files, out, "--num_answers", "5")))
    with pytest.raises(VLPError, match="--answer_min_count does not apply"):
        check(build_parser().parse_args(vqa_argv(inputs, files, out, "--answer_vocab_from",
                                                 "all_answers", "--answer_min_count", "2")))


def test_imdb_split_with_answers_is_scored_like_its_json(trained, tmp_path):
    """VLP evaluated val2014 from Pythia's imdb: its answers are scored without a
    separate annotations file, question for question as the official JSON."""
    inputs, files, root = trained
    ckpt = root / "run" / "model.40"
    keys = image_key_map([str(inputs["src"])])
    entries = [{"image_name": keys[str(e.image_id)], "image_id": e.image_id,
                "question_id": e.question_id, "question_str": e.question,
                "answers": list(e.answers)}
               for e in read_vqa(files["questions"], files["annotations"])]
    imdb = tmp_path / "imdb_val2014.npy"
    np.save(imdb, np.array([{"dataset_name": "vqa"}, *entries], dtype=object))
    as_json = eval_argv(inputs, files, ckpt, "--split", "val", "--output_dir",
                        str(tmp_path / "json"), "--vqa_annotations", str(files["annotations"]))
    assert eval_main(as_json) == 0
    as_imdb = ["--model_recover_path", str(ckpt), "--src_file", str(imdb), "--split", "val",
               "--features", str(inputs["features"]), "--len_vis_input", "8", "--no_progress",
               "--num_workers", "0", "--output_dir", str(tmp_path / "imdb")]
    assert eval_main(as_imdb) == 0
    by_json, by_imdb = (json.loads((tmp_path / d / "model.40.val.vqa_metrics.json").read_text())
                        for d in ("json", "imdb"))
    assert by_imdb["perQuestion"] == by_json["perQuestion"]
    assert by_imdb["overall"] == by_json["overall"] and by_imdb["perAnswerType"] == {}


def test_question_masking_follows_vlps_flags_and_head_size_checked(trained, tmp_path, capsys):
    inputs, files, root = trained
    argv = vqa_argv(inputs, files, tmp_path / "a")
    del argv[argv.index("--max_pred"):argv.index("--max_pred") + 2]
    default = check(build_parser().parse_args(argv))  # VLP's defaults mask in VQA too
    assert (default.mask_prob, default.max_pred, default.mask_vqa_input) == (0.15, 3, True)
    none = check(build_parser().parse_args(vqa_argv(inputs, files, tmp_path / "n")))
    assert (none.max_pred, none.mask_vqa_input) == (0, False)
    vlp_way = check(build_parser().parse_args(vqa_argv(inputs, files, tmp_path / "b",
                                                       "--mask_prob", "0", "--max_pred", "1")))
    assert vlp_way.mask_vqa_input
    vocab = tmp_path / "answers.txt"
    vocab.write_text("red\nno\nyes\n")
    argv = vqa_argv(inputs, files, tmp_path / "c", "--model_recover_path",
                    str(root / "run" / "model.40"), "--answer_vocab", str(vocab))
    assert train_main(argv) == 2
    assert "VQA head for 4 answers" in capsys.readouterr().err
    with pytest.raises(VLPError, match="pair them"):
        from vlp.train.vqa import load_questions

        args = check(build_parser().parse_args(vqa_argv(inputs, files, tmp_path / "d")))
        args.vqa_annotations = [str(files["annotations"])] * 2
        load_questions(args)


def test_two_ranks_by_hand_equal_one_process(tmp_path):
    """The VQA task leaves the masked-LM head unused: DDP must still finish each step."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    from test_train_runs import free_port

    inputs = make_inputs(tmp_path, images=8)
    files = vqa_files(tmp_path, inputs["features"], 8)
    one, two = tmp_path / "one", tmp_path / "two"
    flags = ("--num_train_epochs", "2", "--answer_min_count", "1")  # 8 questions per answer
    assert train_main(vqa_argv(inputs, files, one, *flags)) == 0
    argv = vqa_argv(inputs, files, two, *flags)
    argv[argv.index("--train_batch_size") + 1] = "4"
    url = ["--world_size", "2", "--dist_url", f"tcp://127.0.0.1:{free_port()}"]
    procs = [subprocess.Popen([sys.executable, "-m", "vlp.run_img2txt_dist", *argv,
                               "--local_rank", str(r), "--global_rank", str(r), *url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    a, b = (load_file(run / "model.2" / "model.safetensors") for run in (one, two))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_vqa_training_draws_the_objective_as_vlp_did():
    """VLP's --s2s_prob / --bi_prob applied to VQA training too (default 1 / 0): with
    seq2seq, [CLS] and the first [SEP], which the answer is read from, see only the image,
    so the loss cannot depend on the question; with bidirectional (VLP's README: --s2s_prob
    0 --bi_prob 1) it does. Answering (eval-vqa) is always bidirectional, as eval_vqa2.py."""
    from vlp.model import UnifiedVLP, VLPConfig
    from vlp.train.vqa import VQATask

    torch.manual_seed(0)
    config = VLPConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=48, max_position_embeddings=32,
                       region_feature_dim=6, region_classes=2, max_regions=5, vqa_answers=7,
                       cls_token_id=1, sep_token_id=2, mask_token_id=3)
    model = UnifiedVLP(config).eval()
    with torch.no_grad():  # livelier attention than the init's
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    g = torch.Generator().manual_seed(1)
    regions = dict(region_features=torch.randn(2, 5, 6, generator=g),
                   region_locations=torch.randn(2, 5, 8, generator=g),
                   num_regions=torch.tensor([5, 4]), targets=torch.rand(2, 7, generator=g),
                   text_lengths=torch.tensor([4, 3]), mask_order=None, mask_kind=None,
                   mask_coin=None, mask_random_ids=None, s2s_draw=torch.tensor([0.3, 0.8]))
    questions = [torch.randint(5, 40, (2, 4), generator=g) for _ in range(2)]
    for s2s_prob, depends in ((1.0, False), (0.0, True)):
        model.config = model.config.replace(s2s_prob=s2s_prob, bi_prob=1.0 - s2s_prob)
        task = VQATask(model, mask_input=False)
        with torch.no_grad():
            a, b = (float(task(text_ids=q, **regions)["loss"]) for q in questions)
        assert (abs(a - b) > 1e-3) if depends else abs(a - b) < 1e-6, (s2s_prob, a, b)
