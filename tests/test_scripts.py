"""The recipe scripts: dry runs print commands whose flags `vlp` accepts, ranks add up."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from vlp.cli.decode import build_parser as decode_parser
from vlp.train.args import build_parser as train_parser, check

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
RECIPES = sorted(p.name for p in SCRIPTS.glob("*.sh") if p.name != "launch.sh")
GPUS = {"pretrain_cc.sh": 8, "finetune_coco.sh": 8, "scst_coco.sh": 4,
        "finetune_flickr30k.sh": 8, "decode_coco.sh": 1}


def dry_run(script: str, **env) -> list[list[str]]:
    full = {**os.environ, "DRY_RUN": "1", "DATA_ROOT": "/data", "CHECKPOINT_ROOT": "/ckpt",
            "BERT": "/models/bert-base-cased", "CKPT": "/ckpt/coco/model.*", **env}
    out = subprocess.run(["bash", str(SCRIPTS / script)], env=full, capture_output=True,
                         text=True, check=True)
    return [shlex.split(line) for line in out.stdout.splitlines() if line.strip()]


def parse(cmd: list[str]):
    if cmd[:2] == ["vlp", "decode"]:
        return "decode", decode_parser().parse_args(cmd[2:])
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
    (_, scst), *_ = [parse(c) for c in dry_run("scst_coco.sh")]
    assert scst.scst and scst.learning_rate == 1e-6 and scst.train_batch_size == 16
    (_, dec), = [parse(c) for c in dry_run("decode_coco.sh", SPLIT="val")]
    assert dec.beam_size == 1 and dec.split == "val"
