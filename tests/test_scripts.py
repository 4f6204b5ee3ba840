"""The recipe scripts: dry runs print commands whose flags `vlp` accepts, ranks add up."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from vlp.cli.args import ArgumentParser
from vlp.cli import validate_vqa_submission
from vlp.cli.decode import build_parser as decode_parser
from vlp.cli.eval_vqa import build_parser as eval_vqa_parser
from vlp.train.args import build_parser as train_parser, check

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
RECIPES = sorted(p.name for p in SCRIPTS.glob("*.sh") if p.name != "launch.sh")
GPUS = {"pretrain_cc.sh": 8, "finetune_coco.sh": 8, "scst_coco.sh": 4,
        "finetune_flickr30k.sh": 8, "decode_coco.sh": 1, "finetune_vqa2.sh": 2,
        "eval_vqa2.sh": 1}


def dry_run(script: str, **env) -> list[list[str]]:
    full = {**os.environ, "DRY_RUN": "1", "DATA_ROOT": "/data", "CHECKPOINT_ROOT": "/ckpt",
            "BERT": "/models/bert-base-cased", "CKPT": "/ckpt/coco/model.*", **env}
    out = subprocess.run(["bash", str(SCRIPTS / script)], env=full, capture_output=True,
                         text=True, check=True)
    return [shlex.split(line) for line in out.stdout.splitlines() if line.strip()]


def parse(cmd: list[str]):
    if cmd[:2] == ["vlp", "decode"]:
        return "decode", decode_parser().parse_args(cmd[2:])
    if cmd[:2] == ["vlp", "eval-vqa"]:
        return "eval-vqa", eval_vqa_parser().parse_args(cmd[2:])
    if cmd[:2] == ["vlp", "validate-vqa-submission"]:
        parser = ArgumentParser(prog="vlp")
        validate_vqa_submission.register(parser.add_subparsers(dest="command"))
        return "validate", parser.parse_args(cmd[1:])
    if cmd[:2] == ["vlp", "train"]:
        return "train", check(train_parser().parse_args(cmd[2:]))
    assert cmd[0] == "torchrun", cmd
    rest = cmd[cmd.index("vlp.run_img2txt_dist") + 1:]
    return "torchrun", check(train_parser().parse_args(rest))


def test_every_recipe_is_covered():
    assert sorted(GPUS) == RECIPES


@pytest.mark.parametrize("script", RECIPES)
def test_explicit_ranks_dry_run_parses_and_ranks_add_up(script):
    cmds = dry_run(script)
    assert len(cmds) == GPUS[script]
    parsed = [parse(c) for c in cmds]
    if parsed[0][0] == "train":
        ranks = sorted(a.global_rank for _, a in parsed)
        assert ranks == list(range(GPUS[script]))
        assert all(a.world_size == GPUS[script] and a.dist_url.startswith("tcp://")
                   for _, a in parsed)


@pytest.mark.parametrize("script", [s for s in RECIPES if GPUS[s] > 1])
def test_second_node_and_torchrun_forms(script):
    node1 = [parse(c)[1] for c in dry_run(script, NNODES="2", NODE_RANK="1",
                                           MASTER_ADDR="10.0.0.1")]
    gpus = GPUS[script]
    assert sorted(a.global_rank for a in node1) == list(range(gpus, 2 * gpus))
    assert all(a.world_size == 2 * gpus and a.dist_url == "tcp://10.0.0.1:29500" for a in node1)
    (cmd,) = dry_run(script, LAUNCH="torchrun", NNODES="2", NODE_RANK="1")
    assert cmd[cmd.index("--nproc_per_node") + 1] == str(gpus)
    assert cmd[cmd.index("--nnodes") + 1] == "2" and cmd[cmd.index("--node_rank") + 1] == "1"
    kind, args = parse(cmd)
    assert kind == "torchrun" and args.local_rank == -1


def test_paper_hyperparameters():
    (_, cc), *_ = [parse(c) for c in dry_run("pretrain_cc.sh")]
    assert (cc.learning_rate, cc.train_batch_size, cc.num_train_epochs) == (1e-4, 64, 30)
    assert (cc.s2s_prob, cc.bi_prob, cc.dataset) == (0.75, 0.25, "cc")
    assert cc.region_fc7.endswith("/detectron_weights")
    (_, scst), *_ = [parse(c) for c in dry_run("scst_coco.sh")]
    assert scst.scst and scst.learning_rate == 1e-6 and scst.train_batch_size == 16
    (_, dec), = [parse(c) for c in dry_run("decode_coco.sh", SPLIT="val")]
    assert dec.beam_size == 1 and dec.split == "val"
    (_, vqa), _ = [parse(c) for c in dry_run("finetune_vqa2.sh")]
    assert (vqa.learning_rate, vqa.num_train_epochs, vqa.tasks) == (2e-5, 20, "vqa2")
    assert vqa.train_batch_size * 2 == 512 and vqa.gradient_accumulation_steps == 4
    assert (vqa.s2s_prob, vqa.bi_prob, vqa.mask_prob, vqa.max_pred) == (0, 1, 0, 1)
    (_, both), _ = [parse(c) for c in dry_run("finetune_vqa2.sh", TRAINVAL="1")]
    assert [Path(p).name for p in both.src_file] == ["imdb_train2014.npy", "imdb_val2014.npy"]


@pytest.mark.parametrize("split,subtype", [("test-dev", "test-dev2015"),
                                           ("test-std", "test2015")])
def test_vqa_leaderboard_files_are_written_then_checked(split, subtype):
    (kind, ev), (check_kind, val) = [parse(c) for c in dry_run("eval_vqa2.sh", SPLIT=split,
                                                               CKPT="/ckpt/vqa/model.20")]
    assert (kind, ev.split, Path(ev.src_file).name) == ("eval-vqa", split, f"imdb_{subtype}.npy")
    assert check_kind == "validate" and val.questions == ev.src_file
    assert val.results == f"/ckpt/vqa/vqa_OpenEnded_mscoco_{subtype}_vlp_results.json"


def test_vqa_eval_refuses_an_unknown_split():
    with pytest.raises(subprocess.CalledProcessError):
        dry_run("eval_vqa2.sh", SPLIT="test2016")


def test_relations_from_scratch_builds_its_inputs_from_toyworld_questions():
    from argparse import Namespace

    from vlp.data.toyworld.language import tokenize

    mod = _script("toyworld_relations_from_scratch")
    pairs = mod.questions(60, seed=3, where=True)
    kinds = [q.kind for _, q in pairs]
    assert len(pairs) == 60 and set(kinds) == {"position", "where"}
    assert all(q.kind == "position" for _, q in mod.questions(30, seed=3, where=False))
    vocab = {w: i + 1 for i, w in enumerate(sorted({w for _, q in pairs for w in tokenize(q.question)}))}
    category, boxes, words, answer = mod.tensors(pairs, vocab, frequencies=2)
    assert boxes.shape[-1] == 4 * (1 + 2 * 2)
    for i, (shapes, q) in enumerate(pairs):
        assert mod.ANSWERS[answer[i]] == q.answer
        assert (category[i] > 0).sum() == len(shapes)
        x1, _, x2, _ = shapes[0].box
        assert float(boxes[i, 0, 0]) == pytest.approx((x1 + x2) / 2 / mod.IMAGE_SIZE)
    test, train = mod.run("position+where", Namespace(questions=60, seed=3, box_frequencies=2, steps=5))
    assert 0.0 <= test <= 1.0 and 0.0 <= train <= 1.0


def _script(name: str):
    """A script under scripts/ as a module (registered, as its dataclasses need)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _store_of_scenes(path, scenes, class_names, keep=lambda objects: objects):
    import numpy as np

    from vlp.data.features import RegionRecord, create_store

    with create_store(path) as out:
        for s in scenes:
            objects = keep(s["objects"])
            probs = np.zeros((len(objects), len(class_names)), dtype=np.float16)
            for k, o in enumerate(objects):
                probs[k, class_names.index(f"{o['size']} {o['color']} {o['shape']}")] = 1.0
            out.put(Path(s["file_name"]).stem, RegionRecord(
                boxes=np.array([o["box"] for o in objects], dtype=np.float32).reshape(-1, 4),
                features=np.zeros((len(objects), 4), dtype=np.float16), cls_probs=probs,
                scores=np.ones(len(objects), dtype=np.float32), image_w=128, image_h=128))


def test_region_answers_get_every_question_from_exact_regions_and_miss_a_dropped_shape(tmp_path):
    import json

    from vlp.data.toyworld import ToyWorldConfig, generate
    from vlp.data.toyworld.scene import COLORS, SHAPES, SIZES
    from vlp.eval.vqa_score import score_files

    mod = _script("toyworld_region_answers")
    run = tmp_path / "run"
    generate(run / "toyworld", ToyWorldConfig(images=40, pretrain_images=2, seed=5), progress=False)
    names = ["__background__"] + [f"{z} {c} {s}" for z in SIZES for c in COLORS for s in SHAPES]
    (run / "detector").mkdir()
    (run / "detector" / "detector.json").write_text(json.dumps({"class_names": names}))
    scenes = json.loads((run / "toyworld" / "annotations" / "scenes_toy.json").read_text())
    vqa = run / "toyworld" / "annotations" / "vqa"
    files = (vqa / "v2_OpenEnded_toy_train_questions.json", vqa / "v2_toy_train_annotations.json")

    def scores(results):
        (tmp_path / "results.json").write_text(json.dumps(results))
        return score_files(tmp_path / "results.json", *files)

    _store_of_scenes(run / "regions.lmdb", scenes, names)
    exact = scores(mod.region_answers(run, "train"))
    assert exact.overall == 100.0 and len(exact.per_question_type) == 5

    # A detector that misses the last shape of each scene with more than one gets
    # counts (and more) wrong.
    _store_of_scenes(run / "missed.lmdb", scenes, names,
                     keep=lambda objects: objects[:-1] if len(objects) > 1 else objects)
    (run / "regions.lmdb").rename(run / "exact.lmdb")
    (run / "missed.lmdb").rename(run / "regions.lmdb")
    missed = scores(mod.region_answers(run, "train"))
    assert missed.per_question_type["how many"] < 90.0 and missed.overall < 80.0
