"""`vlp train --fsdp` on gloo ranks: equal to DDP, exact resume from DCP shards, the
conversion to one model directory, and what a mismatched resume or a tampered file gets."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from test_train_runs import free_port, ranks, with_batch
from train_fixtures import make_inputs, train_argv
from vlp.cli import main as vlp_main
from vlp.cli.decode import main as decode_main
from vlp.errors import VLPError
from vlp.model import UnifiedVLP
from vlp.model.checkpoint import TOKENIZER_FILES
from vlp.model.dcp import DCP_DIR, METADATA, is_dcp
from vlp.train.log import read_metrics
from vlp.train.main import main as train_main

EPOCHS = ("--num_train_epochs", "2", "--gradient_accumulation_steps", "2", "--log_steps", "1")


def two_ranks(argv: list[str]) -> None:
    procs = ranks(with_batch(argv, 4), 2, free_port(), stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE, text=True)
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]


def state(checkpoint) -> dict:
    return UnifiedVLP.from_pretrained(checkpoint).state_dict()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    inputs = make_inputs(root / "in", images=16, dropout=0.1)
    two_ranks(train_argv(inputs, root / "ddp", *EPOCHS))
    two_ranks(train_argv(inputs, root / "fsdp", *EPOCHS, "--fsdp"))
    return inputs, root


def test_fsdp_on_two_ranks_equals_ddp_on_two_ranks(runs):
    _, root = runs
    fsdp = root / "fsdp" / "model.2"
    assert is_dcp(fsdp) and not (fsdp / "model.safetensors").exists()
    # Both ranks wrote their shards; the optimizer state is among them, not in the .pt.
    sizes = [f.stat().st_size for f in (fsdp / DCP_DIR).glob("*.distcp")]
    assert len(sizes) == 2 and max(sizes) < 0.6 * sum(sizes)  # each rank holds about half
    assert "optimizer" not in torch.load(fsdp / "trainer_state.pt", weights_only=True)
    a, b = state(root / "ddp" / "model.2"), state(fsdp)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    # Epoch 1's shards were gathered into weights once epoch 2's checkpoint was complete.
    older = root / "fsdp" / "model.1"
    assert (older / "model.safetensors").is_file() and not (older / DCP_DIR).exists()
    assert not (older / "trainer_state.pt").exists()
    a, b = state(root / "ddp" / "model.1"), state(older)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    losses = [r["loss"] for r in read_metrics(root / "fsdp")]
    ddp_losses = [r["loss"] for r in read_metrics(root / "ddp")]
    assert losses == pytest.approx(ddp_losses, abs=1e-5) and len(losses) == 8


def test_killed_fsdp_run_resumes_to_the_uninterrupted_result(runs, tmp_path):
    inputs, root = runs
    out = tmp_path / "killed"
    argv = with_batch(train_argv(inputs, out, *EPOCHS, "--fsdp", "--save_steps", "1"), 4)
    procs = ranks(argv, 2, free_port(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not (out / "step.2").is_dir():
        time.sleep(0.01)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert (out / "step.2").is_dir() and not (out / "model.2").exists(), \
        "the run ended before it could be killed"
    two_ranks(train_argv(inputs, out, *EPOCHS, "--fsdp", "--save_steps", "1"))
    a, b = state(root / "fsdp" / "model.2"), state(out / "model.2")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 9))


def test_shards_convert_to_one_directory_that_decodes_as_the_ddp_model(runs, tmp_path):
    inputs, root = runs
    converted = tmp_path / "converted"
    assert vlp_main(["convert-checkpoint", str(root / "fsdp" / "model.2"), "--from", "dcp",
                     "--out", str(converted)]) == 0
    assert (converted / "model.safetensors").is_file() and (converted / "vocab.txt").is_file()
    assert not (converted / DCP_DIR).exists()
    captions = {}
    for name, checkpoint in (("ddp", root / "ddp" / "model.2"), ("converted", converted),
                             ("shards", root / "fsdp" / "model.2")):
        out = tmp_path / name
        assert decode_main(["--model_recover_path", str(checkpoint), "--src_file",
                            str(inputs["src"]), "--features", str(inputs["features"]),
                            "--split", "train", "--len_vis_input", "8", "--max_tgt_length", "6",
                            "--beam_size", "3", "--min_len", "4", "--output_dir", str(out),
                            "--num_workers", "0",
                            "--no_progress", "--no_eval"]) == 0
        (results,) = out.glob("*.results.json")
        captions[name] = json.loads(results.read_text())
    assert captions["converted"] == captions["shards"] == captions["ddp"]
    assert len({r["caption"] for r in captions["ddp"]}) > 1


def test_dropping_the_resume_state_gathers_the_shards_exactly(runs, tmp_path, capsys):
    from vlp.train.checkpoint import drop_resume_state

    _, root = runs
    done = tmp_path / "model.2"
    subprocess.run(["cp", "-r", str(root / "fsdp" / "model.2"), str(done)], check=True)
    drop_resume_state(done)
    left = {p.name for p in done.iterdir()} - set(TOKENIZER_FILES)
    assert left == {"config.json", "model.safetensors", "trainer_state.json"}
    a, b = state(root / "fsdp" / "model.2"), state(done)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert vlp_main(["convert-checkpoint", str(done), "--from", "dcp", "--out",
                     str(tmp_path / "out")]) == 2
    assert "weights are in model.safetensors already" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (("--fsdp",), "--world_size 1 (checkpoint: 2)"),
    ((), "no --fsdp (checkpoint: with it)"),
])
def test_resuming_shards_with_other_ranks_or_without_fsdp_is_refused(runs, tmp_path, capsys,
                                                                       extra, message):
    inputs, root = runs
    out = tmp_path / "run"
    (out / "model.2").parent.mkdir()
    subprocess.run(["cp", "-r", str(root / "fsdp" / "model.2"), str(out / "model.2")], check=True)
    assert train_main(train_argv(inputs, out, *EPOCHS, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out / "model.2") in err and message in err


def test_a_ddp_checkpoint_does_not_resume_under_fsdp(runs, tmp_path, capsys):
    inputs, root = runs
    out = tmp_path / "run"
    out.mkdir()
    subprocess.run(["cp", "-r", str(root / "ddp" / "model.2"), str(out / "model.2")], check=True)
    argv = with_batch(train_argv(inputs, out, *EPOCHS, "--fsdp"), 4)
    procs = ranks(argv, 2, free_port(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 2 for p in procs)
    last = errors[0].strip().splitlines()[-1]
    assert str(out / "model.2") in last and "--fsdp (checkpoint: without it)" in last


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['VLP_TEST_MARKER']}",))


def test_metadata_that_would_run_code_is_refused_unrun(runs, tmp_path, monkeypatch):
    _, root = runs
    tampered = tmp_path / "model.2"
    subprocess.run(["cp", "-r", str(root / "fsdp" / "model.2"), str(tampered)], check=True)
    marker = tmp_path / "ran"
    monkeypatch.setenv("VLP_TEST_MARKER", str(marker))
    (tampered / DCP_DIR / METADATA).write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(VLPError, match=r"\.metadata: refused"):
        UnifiedVLP.from_pretrained(tampered)
    assert not marker.exists()


def test_a_single_process_fsdp_run_equals_a_plain_one(tmp_path):
    inputs = make_inputs(tmp_path / "in", images=8)
    common = ("--num_train_epochs", "1")
    assert train_main(train_argv(inputs, tmp_path / "plain", *common)) == 0
    assert train_main(train_argv(inputs, tmp_path / "fsdp", *common, "--fsdp")) == 0
    a, b = state(tmp_path / "plain" / "model.1"), state(tmp_path / "fsdp" / "model.1")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _overflow_on_one_rank(rank: int, store_path: str, optimizer: str, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from vlp import precision
    from vlp.train import distributed, optim

    dist.init_process_group("gloo", store=dist.FileStore(store_path, 2), rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    fully_shard(model[0])
    fully_shard(model, mesh=init_device_mesh("cpu", (2,)))
    opt = optim.build(optimizer, model, 1e-2, 0.01, 1.0)
    scaler = precision.grad_scaler("fp16", torch.device("cpu"))
    before = [p.full_tensor().clone() for p in model.parameters()]
    scaler.scale(model(torch.randn(3, 4)).sum()).backward()
    if rank == 1:  # an overflow in this rank's shard only
        next(model.parameters()).grad.to_local().fill_(float("inf"))
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    after = [p.full_tensor() for p in model.parameters()]
    unchanged = all(torch.equal(a, b) for a, b in zip(before, after))
    torch.save({"unchanged": unchanged, "scale": scaler.get_scale()}, f"{out}.{rank}")
    distributed.shutdown(finished=True)  # every rank done with every collective
    # Leave without finalizing the interpreter. Gloo has no shutdown: the group outlives
    # destroy_process_group (the FSDP mesh and DTensor's caches hold it), and its worker
    # threads drop each finished collective's tensors after the caller's wait returns,
    # which decrefs their Python objects under the GIL. A thread that asks for the GIL
    # once finalization has begun is ended by pthread_exit, which unwinds through torch's
    # noexcept decref into std::terminate (SIGABRT, "terminate called without an active
    # exception"). The result file is closed and every rank is past the barrier.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.mark.parametrize("optimizer", ["adamw", "bertadam"])
def test_an_overflow_in_one_ranks_shard_skips_the_step_on_every_rank(tmp_path, optimizer):
    import torch.multiprocessing as mp

    out = str(tmp_path / "result")
    mp.spawn(_overflow_on_one_rank, args=(str(tmp_path / "store"), optimizer, out), nprocs=2)
    results = [torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1)]
    assert all(r["unchanged"] for r in results)
    assert results[0]["scale"] == results[1]["scale"] == 65536.0 / 2
