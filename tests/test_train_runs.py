"""Whole training runs on tiny inputs: accumulation, exact resume, DDP, bad input."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from train_fixtures import FEATURE_DIM, make_inputs, train_argv
from vlp.train.log import read_metrics
from vlp.train.main import main

TRAIN = [sys.executable, "-m", "vlp.run_img2txt_dist"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"), images=16)


def weights(run: Path, name: str) -> dict:
    return load_file(run / name / "model.safetensors")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def with_batch(argv: list[str], batch: int) -> list[str]:
    argv = list(argv)
    argv[argv.index("--train_batch_size") + 1] = str(batch)
    return argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ranks(argv: list[str], world: int, port: int, **popen) -> list[subprocess.Popen]:
    """VLP's launch: one process per rank started by hand with explicit ranks."""
    url = ["--world_size", str(world), "--dist_url", f"tcp://127.0.0.1:{port}"]
    return [subprocess.Popen(TRAIN + argv + ["--local_rank", str(r), "--global_rank", str(r)] + url,
                             **popen) for r in range(world)]


def test_a_run_learns_logs_and_writes_loadable_checkpoints(inputs, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(inputs, out, "--num_train_epochs", "4", "--log_steps", "1")) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 17))
    assert np.mean([r["loss"] for r in rows[-4:]]) < np.mean([r["loss"] for r in rows[:4]])
    assert all(0.0 <= r["data_wait_frac"] <= 1.0 for r in rows)
    assert {"lr", "samples_per_s", "grad_norm"} <= rows[0].keys()
    assert sorted(p.name for p in out.glob("model.*")) == [f"model.{e}" for e in (1, 2, 3, 4)]
    assert list((out / "tb").glob("events.out.tfevents.*"))
    from vlp.model import UnifiedVLP

    model = UnifiedVLP.from_pretrained(out / "model.4")
    assert model.config.region_feature_dim == FEATURE_DIM and model.config.s2s_prob == 0.5
    assert (out / "model.4" / "vocab.txt").is_file()
    # A finished run started again has nothing left to do and changes nothing.
    before = weights(out, "model.4")
    assert main(train_argv(inputs, out, "--num_train_epochs", "4")) == 0
    assert max_diff(before, weights(out, "model.4")) == 0.0
    assert "resuming from" in capsys.readouterr().out


def test_worst_examples_are_dropped_only_after_drop_after(inputs, tmp_path):
    runs = {}
    for after in (1, 2):
        out = tmp_path / f"after{after}"
        assert main(train_argv(inputs, out, "--num_train_epochs", "2", "--log_steps", "1",
                               "--max_drop_worst_ratio", "0.5", "--drop_after", str(after))) == 0
        runs[after] = [r["loss"] for r in read_metrics(out)]
    # Epoch 1 (steps 1-4) is the same; from epoch 2 on, with --drop_after 1, the half of
    # each batch with the largest loss is left out of it.
    assert runs[1][:4] == runs[2][:4]
    assert runs[1][4] < runs[2][4]


def test_gradient_accumulation_equals_the_full_batch(inputs, tmp_path):
    common = ("--num_train_epochs", "2")
    assert main(train_argv(inputs, tmp_path / "full", *common)) == 0
    assert main(train_argv(inputs, tmp_path / "acc", *common,
                           "--gradient_accumulation_steps", "2")) == 0
    assert max_diff(weights(tmp_path / "full", "model.2"), weights(tmp_path / "acc", "model.2")) < 1e-6


def test_kill_9_then_rerun_is_bitwise_an_uninterrupted_run(tmp_path):
    data = make_inputs(tmp_path / "in", images=24, dropout=0.1)
    extra = ("--num_train_epochs", "2", "--log_steps", "1", "--save_steps", "1",
             "--deterministic")
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(TRAIN + train_argv(data, clean, *extra), check=True, capture_output=True)
    proc = subprocess.Popen(TRAIN + train_argv(data, killed, *extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop_after = int(np.random.default_rng().integers(2, 10))
    log = killed / "log.jsonl"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if log.is_file() and len(log.read_text().splitlines()) >= stop_after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "model.2").exists()
    rerun = subprocess.run(TRAIN + train_argv(data, killed, *extra), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from" in rerun.stdout
    a, b = weights(clean, "model.2"), weights(killed, "model.2")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_metrics(killed)] == list(range(1, 13))
    assert not list(killed.glob(".tmp-*"))


def resumable(run: Path) -> dict:
    """Each epoch checkpoint of `run` -> whether it still holds the resume state."""
    return {p.name: (p / "trainer_state.pt").is_file() for p in sorted(run.glob("model.*"))}


def test_only_the_newest_checkpoint_keeps_the_resume_state(inputs, tmp_path):
    from vlp.model import UnifiedVLP

    out = tmp_path / "run"
    assert main(train_argv(inputs, out, "--num_train_epochs", "3", "--save_steps", "3")) == 0
    assert resumable(out) == {"model.1": False, "model.2": False, "model.3": True}
    assert not list(out.glob("step.*"))  # steps 3, 6, 9, 12: each superseded by an epoch's
    # The older epochs stay whole models, and say how far the run had come.
    older = out / "model.1"
    assert UnifiedVLP.from_pretrained(older).config.region_feature_dim == FEATURE_DIM
    assert json.loads((older / "trainer_state.json").read_text())["step"] == 4
    fine = tmp_path / "fine"
    assert main(train_argv(inputs, fine, "--num_train_epochs", "1",
                           "--model_recover_path", str(older))) == 0
    assert resumable(fine) == {"model.1": True}


class Crash(Exception):
    pass


def test_keep_checkpoints_keeps_the_newest_and_a_crash_keeps_a_resume_point(
        inputs, tmp_path, monkeypatch):
    import os

    from vlp.train import checkpoint

    argv = ("--num_train_epochs", "3", "--keep_checkpoints", "2", "--log_steps", "1",
            "--deterministic")
    clean, out = tmp_path / "clean", tmp_path / "run"
    assert main(train_argv(inputs, clean, *argv)) == 0
    assert resumable(clean) == {"model.2": False, "model.3": True}

    # Stopped while epoch 2's checkpoint is renamed into place: epoch 1's keeps its state.
    rename = os.replace

    def stop_at_epoch_2(src, dst):
        if Path(src).name.startswith(".tmp-model.2"):
            raise Crash
        rename(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", stop_at_epoch_2)
    with pytest.raises(Crash):
        main(train_argv(inputs, out, *argv))
    monkeypatch.undo()
    assert resumable(out) == {"model.1": True}

    # Stopped once epoch 2's checkpoint is complete, before the older one is retired.
    def stop(*_):
        raise Crash

    monkeypatch.setattr(checkpoint, "retire_older", stop)
    with pytest.raises(Crash):
        main(train_argv(inputs, out, *argv))
    monkeypatch.undo()
    assert resumable(out) == {"model.1": True, "model.2": True}

    assert main(train_argv(inputs, out, *argv)) == 0  # from the newest, model.2
    assert resumable(out) == {"model.2": False, "model.3": True}
    assert max_diff(weights(clean, "model.3"), weights(out, "model.3")) == 0.0
    assert max_diff(weights(clean, "model.2"), weights(out, "model.2")) == 0.0
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 13))
    assert not list(out.glob(".tmp-*"))


def test_a_finished_run_whose_last_checkpoint_is_weights_only(inputs, tmp_path, capsys):
    from vlp.train.checkpoint import drop_resume_state

    out = tmp_path / "run"
    assert main(train_argv(inputs, out, "--num_train_epochs", "1")) == 0
    before = weights(out, "model.1")
    drop_resume_state(out / "model.1")
    drop_resume_state(out / "model.1")  # nothing left to drop
    assert resumable(out) == {"model.1": False}
    # Started again it has nothing to do; asked for more, it names the way on.
    assert main(train_argv(inputs, out, "--num_train_epochs", "1")) == 0
    assert max_diff(before, weights(out, "model.1")) == 0.0 and resumable(out) == {"model.1": False}
    code, err = run_cli(train_argv(inputs, out, "--num_train_epochs", "2"), capsys)
    assert code == 2 and "model.1: no trainer_state.pt" in err and "--model_recover_path" in err
    assert len(err.strip().splitlines()) == 1 and not (out / "model.2").exists()


def test_two_ranks_by_hand_equal_one_process_with_the_global_batch(inputs, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(train_argv(inputs, one, "--num_train_epochs", "2")) == 0
    procs = ranks(with_batch(train_argv(inputs, two, "--num_train_epochs", "2"), 4), 2,
                  free_port(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    assert max_diff(weights(one, "model.2"), weights(two, "model.2")) <= 1e-6
    assert (two / "training.log").is_file() and (two / "training.rank1.log").is_file()
    assert "rank1" in (two / "training.rank1.log").read_text()


@pytest.mark.parametrize("sharding, weights", [((), "model.safetensors"),
                                               (("--fsdp",), "dcp/.metadata")])
def test_torchrun_launch(inputs, tmp_path, sharding, weights):
    out = tmp_path / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(free_port()), "-m", "vlp.run_img2txt_dist",
           *with_batch(train_argv(inputs, out, "--num_train_epochs", "1", *sharding), 4)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 process(es)" in run.stdout and (out / "model.1" / weights).is_file()


def test_a_dead_rank_makes_the_other_exit_nonzero(tmp_path):
    data = make_inputs(tmp_path / "in", images=200)
    argv = train_argv(data, tmp_path / "run", "--num_train_epochs", "50", "--log_steps", "1",
                      "--dist_timeout", "30")
    procs = ranks(with_batch(argv, 4), 2, free_port(), stdout=subprocess.DEVNULL,
                  stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "log.jsonl"
    deadline = time.time() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    start = time.time()
    _, err = procs[0].communicate(timeout=90)
    assert procs[0].returncode != 0
    assert time.time() - start < 60
    procs[1].wait()


# -- bad input ---------------------------------------------------------------------------

def run_cli(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_nonfinite_loss_stops_naming_step_and_images_or_is_skipped(inputs, tmp_path, capsys):
    argv = train_argv(inputs, tmp_path / "nan", "--num_train_epochs", "2")
    argv[argv.index("--learning_rate") + 1] = "1e30"
    code, err = run_cli(argv + ["--max_grad_norm", "0"], capsys)
    assert code == 2 and "non-finite loss" in err and "at step" in err and "img_00" in err
    assert len(err.strip().splitlines()) == 1
    skipped = tmp_path / "skip"
    argv[argv.index("--output_dir") + 1] = str(skipped)
    assert main(argv + ["--max_grad_norm", "0", "--skip_nonfinite"]) == 0
    state = json.loads((skipped / "model.2" / "trainer_state.json").read_text())
    assert state["nonfinite_skipped"] > 0


def test_missing_features_are_listed_then_error_or_skipped(inputs, tmp_path, capsys):
    from train_fixtures import captions_json

    src = captions_json(tmp_path / "more.json", images=30)
    argv = train_argv(inputs, tmp_path / "run", "--num_train_epochs", "1")
    argv[argv.index("--src_file") + 1] = str(src)
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert "14 of 30 images have no features" in err and "img_0016" in err and "and 4 more" in err
    assert main(argv + ["--skip_missing_features"]) == 0
    assert "14 of 30 images" in (tmp_path / "run" / "training.log").read_text()


def test_missing_valid_jpgs_file_is_an_error_and_never_created(inputs, tmp_path, capsys):
    missing = tmp_path / "valid.json"
    code, err = run_cli(train_argv(inputs, tmp_path / "run", "--file_valid_jpgs", str(missing)),
                        capsys)
    assert code == 2 and "--file_valid_jpgs" in err and not missing.exists()


@pytest.mark.parametrize("extra, message", [
    (["--bf16", "--fp16"], "--bf16 conflicts with --fp16"),
    (["--s2s_prob", "0.5", "--bi_prob", "0.4"], "must be 1"),
    (["--train_batch_size", "6", "--gradient_accumulation_steps", "4"], "not a multiple"),
    (["--len_vis_input", "80"], "positions"),
    (["--head_learning_rate", "1e-3"], "--head_learning_rate sets the rate of the VQA answer"),
    (["--scst", "--model_recover_path", "x", "--max_drop_worst_ratio", "0.2"],
     "--max_drop_worst_ratio drops masked-LM examples"),
])
def test_conflicting_flags_are_named(inputs, tmp_path, capsys, extra, message):
    code, err = run_cli(train_argv(inputs, tmp_path / "run", *extra), capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("extra, message", [
    (["--l2r_prob", "0.2"], "unrecognized arguments: --l2r_prob"),
    (["--drop_prob", "1.5"], "--drop_prob: must be between 0 and 1"),
    (["--keep_checkpoints", "0"], "--keep_checkpoints: must be at least 1, got 0"),
])
def test_unknown_flag_or_bad_value_is_one_line(inputs, tmp_path, extra, message):
    run = subprocess.run(TRAIN + train_argv(inputs, tmp_path / "r", *extra),
                         capture_output=True, text=True)
    assert run.returncode == 2 and message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_corrupt_or_foreign_checkpoint_is_an_error_not_a_fresh_start(inputs, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(inputs, out, "--num_train_epochs", "1")) == 0
    weights_file = out / "model.1" / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:100])
    code, err = run_cli(train_argv(inputs, out, "--num_train_epochs", "2"), capsys)
    assert code == 2 and "model.1" in err and not (out / "model.2").exists()

    other = tmp_path / "other"
    assert main(train_argv(inputs, other, "--num_train_epochs", "1")) == 0
    code, err = run_cli(with_batch(train_argv(inputs, other, "--num_train_epochs", "2"), 4), capsys)
    assert code == 2 and "--train_batch_size 4 (checkpoint: 8)" in err

    # Optimizer state of other trainable parameters (a head trained then, frozen now).
    state_file = other / "model.1" / "trainer_state.pt"
    state = torch.load(state_file, weights_only=True)
    state["optimizer"]["param_groups"][0]["params"].append(10_000)
    torch.save(state, state_file)
    code, err = run_cli(train_argv(inputs, other, "--num_train_epochs", "2"), capsys)
    assert code == 2 and "optimizer state does not fit the parameters trained here" in err

    (other / "model.1" / "trainer_state.json").write_text("{not json")
    code, err = run_cli(train_argv(inputs, other, "--num_train_epochs", "2"), capsys)
    assert code == 2 and "trainer_state.json" in err


def test_model_recover_path_starts_from_weights_not_from_the_run(inputs, tmp_path, capsys):
    first = tmp_path / "pretrain"
    assert main(train_argv(inputs, first, "--num_train_epochs", "1")) == 0
    fine = tmp_path / "finetune"
    argv = train_argv(inputs, fine, "--num_train_epochs", "1", "--model_recover_path",
                      str(first / "model.1"), "--s2s_prob", "1", "--bi_prob", "0",
                      "--drop_prob", "0.25")
    assert main(argv) == 0
    state = json.loads((fine / "model.1" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["epoch"] == 2  # its own schedule: 32 captions / 8
    from vlp.model import UnifiedVLP

    config = UnifiedVLP.from_pretrained(fine / "model.1").config
    assert config.s2s_prob == 1.0 and config.hidden_dropout_prob == 0.25
    assert max_diff(weights(first, "model.1"), weights(fine, "model.1")) > 0


def test_the_vlp_train_subcommand_runs_the_same_trainer(inputs, tmp_path):
    from vlp.cli import main as vlp_main

    out = tmp_path / "cli"
    assert vlp_main(["train", *train_argv(inputs, out, "--num_train_epochs", "1")]) == 0
    assert json.loads((out / "opt.json").read_text())["num_train_epochs"] == 1
    assert (out / "model.1" / "model.safetensors").is_file()


def test_vlp_flags_that_change_nothing_are_taken(inputs, tmp_path):
    from vlp.train.args import build_parser

    argv = train_argv(inputs, tmp_path / "r", "--enable_visdom", "--visdom_port", "8097",
                      "--finetune_decay")
    args = build_parser().parse_args(argv)
    assert args.enable_visdom and args.finetune_decay and args.visdom_port == 8097
