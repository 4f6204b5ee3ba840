"""bench/gpu.sh: its dry run lists every CUDA path and GPU benchmark, in order, and every
command it prints parses with the project's own argument parsers (nothing is run)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vlp.cli import build_parser as vlp_parser
from vlp.errors import VLPError
from vlp.train import args as train_args

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu.sh"
BENCHES = ("bench/train_step.py", "bench/decode.py", "bench/extract.py")


def dry_run(tmp_path: Path, *flags: str, **env) -> tuple[subprocess.CompletedProcess, list]:
    # The script's own settings come from the environment: only those given here count.
    mine = ("OUT", "PYTHON", "NGPU", "IMAGES", "BUDGET")
    full = {**{k: v for k, v in os.environ.items() if k not in mine},
            "OUT": str(tmp_path / "gpu"), "PYTHON": sys.executable, **env}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", *flags], cwd=tmp_path, env=full,
                          capture_output=True, text=True, timeout=120)
    cmds = [shlex.split(line) for line in proc.stdout.splitlines()
            if line.strip() and not line.startswith("#")]
    return proc, cmds


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    """The dry run as a user starts it (GPU count from torch): each command with its
    parsed flags, or with the parser's complaint."""
    tmp = tmp_path_factory.mktemp("gpu_sh")
    proc, cmds = dry_run(tmp)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp / "gpu").exists(), "a dry run wrote its work directory"
    assert cmds, proc.stdout
    rows = []
    for cmd in cmds:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                rows.append((cmd, parse(cmd)))
        except SystemExit:
            rows.append((cmd, ("refused", err.getvalue().strip())))
        except VLPError as error:  # vlp train's checks of flags that parse but conflict
            rows.append((cmd, ("refused", str(error))))
    return rows


@pytest.fixture(scope="module")
def listed(printed):
    return [(cmd, parsed) for cmd, parsed in printed if parsed[0] != "refused"]


def test_every_printed_command_parses(printed):
    refused = [f"{shlex.join(cmd)}\n  -> {why}" for cmd, (kind, why) in printed
               if kind == "refused"]
    assert not refused, "\n".join(refused)


def parse(cmd: list[str]):
    """(kind, namespace) from the parser the command would meet; argparse errors fail."""
    if cmd == ["nvidia-smi"]:
        return "nvidia-smi", None
    assert cmd[0] == sys.executable, cmd
    if cmd[1:3] == ["-m", "vlp"]:
        args = vlp_parser().parse_args(cmd[3:])
        if args.command == "train":
            args = checked(args)
        return args.command, args
    if cmd[1:3] == ["-m", "torch.distributed.run"]:
        from torch.distributed.run import get_args_parser

        launch = get_args_parser().parse_args(cmd[3:])
        assert launch.module and launch.training_script == "vlp.run_img2txt_dist", cmd
        args = train_args.build_parser("python -m vlp.run_img2txt_dist").parse_args(
            launch.training_script_args)
        return "torchrun", (launch, checked(args))
    if cmd[1] == "bench/gpu_check.py":
        return "gpu_check", load(cmd[1]).build_parser().parse_args(cmd[2:])
    assert cmd[1] in BENCHES, cmd
    return cmd[1], bench_args(cmd[1], cmd[2:])


def checked(args):
    """vlp train's own flag checks, without looking for checkpoints that a dry run never
    made (check() resolves --model_recover_path on disk)."""
    real = train_args.resolve
    train_args.resolve = Path
    try:
        return train_args.check(args)
    finally:
        train_args.resolve = real


def load(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"gpu_sh_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


class _Parsed(Exception):
    pass


def bench_args(relative: str, argv: list[str]) -> argparse.Namespace:
    """A bench script's flags through its own argparse: its main() runs up to
    parse_args, which is stopped there (imports are its only other work)."""
    module = load(relative)
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(real(self, args, namespace))

    saved_argv = sys.argv
    argparse.ArgumentParser.parse_args = parse_then_stop
    sys.argv = [relative, *argv]
    try:
        module.main()
    except _Parsed as parsed:
        return parsed.args[0]
    finally:
        argparse.ArgumentParser.parse_args = real
        sys.argv = saved_argv
    raise AssertionError(f"{relative}: main() returned without parsing its flags")


def find(listed, kind, **want):
    """The commands of `kind` whose parsed flags have the values in `want`."""
    hits = []
    for i, (cmd, (k, args)) in enumerate(listed):
        if k != kind:
            continue
        ns = args[1] if kind == "torchrun" else args
        if all(getattr(ns, name, None) == value for name, value in want.items()):
            hits.append((i, cmd, args))
    return hits


def one(listed, kind, **want):
    hits = find(listed, kind, **want)
    assert len(hits) == 1, (kind, want, [cmd for _, cmd, _ in hits])
    return hits[0]


def test_dry_run_lists_environment_data_and_extraction_on_cuda(listed):
    assert listed[0][1][0] == "nvidia-smi"
    _, env_cmd, _ = one(listed, "gpu_check", command="env")
    assert "--cpu" not in env_cmd
    tw_i, _, tw = one(listed, "toyworld")
    assert tw.images <= 500
    det_i, _, det = one(listed, "train-detector", device="cuda")
    ext_i, _, ext = one(listed, "extract", device="cuda", amp=True)
    assert ext.detector == det.out and det.max_steps <= 100
    assert tw_i < det_i < ext_i


def test_dry_run_trains_in_fp16_bf16_ddp_and_fsdp(listed):
    ext = one(listed, "extract")[2]
    _, _, fp16 = one(listed, "train", fp16=True)
    bf16_i, _, bf16 = one(listed, "train", bf16=True, tasks="img2txt")
    for args in (fp16, bf16):
        assert args.features == ext.out and args.num_train_epochs == 1
    import torch

    gpus = str(torch.cuda.device_count() or 1)
    ddp = [hit for hit in find(listed, "torchrun", tasks="img2txt")
           if "--fsdp" not in hit[1] and "--scst" not in hit[1]]
    assert len(ddp) == 1, ddp
    ddp_launch = ddp[0][2][0]
    fsdp_i, _, (fsdp_launch, fsdp) = one(listed, "torchrun", fsdp=True, bf16=True)
    for launch in (ddp_launch, fsdp_launch):
        assert launch.standalone and launch.nproc_per_node == gpus
    assert fsdp.save_steps > 0
    conv_i, _, conv = one(listed, "convert-checkpoint", source="dcp")
    assert Path(conv.path).parent == Path(fsdp.output_dir) and fsdp_i < conv_i
    dec_i, _, dec = one(listed, "decode", model_recover_path=conv.out)
    assert conv_i < dec_i and dec.beam_size > 1
    assert bf16_i < fsdp_i


def test_dry_run_decodes_and_answers_vqa_from_checkpoints_it_trains(listed):
    bf16_i, _, bf16 = one(listed, "train", bf16=True, tasks="img2txt")
    dec_i, _, dec = one(listed, "decode", grounding=True)
    assert Path(dec.model_recover_path).parent == Path(bf16.output_dir)
    assert dec.beam_size > 1 and bf16_i < dec_i
    if shutil.which("java") is None:
        assert dec.no_java
    vqa_i, _, vqa = one(listed, "train", tasks="vqa2")
    assert Path(vqa.model_recover_path).parent == Path(bf16.output_dir) and bf16_i < vqa_i
    eval_i, _, ev = one(listed, "eval-vqa")
    assert Path(ev.model_recover_path).parent == Path(vqa.output_dir) and vqa_i < eval_i
    assert ev.vqa_annotations


def test_dry_run_runs_scst_on_every_gpu_from_the_caption_checkpoint(listed):
    import torch

    bf16_i, _, bf16 = one(listed, "train", bf16=True, tasks="img2txt")
    scst_i, _, (launch, scst) = one(listed, "torchrun", scst=True)
    assert launch.nproc_per_node == str(torch.cuda.device_count() or 1) and not scst.fsdp
    assert Path(scst.model_recover_path).parent == Path(bf16.output_dir) and bf16_i < scst_i
    assert scst.output_vocab == "train" and scst.bf16 and scst.max_steps > 0


def test_dry_run_trains_three_tasks_on_every_gpu_and_locates_from_the_checkpoint(listed):
    import torch

    multi_i, _, (launch, multi) = one(listed, "torchrun", tasks="img2txt,vqa2,refcoco")
    assert launch.nproc_per_node == str(torch.cuda.device_count() or 1) and multi.bf16
    assert {f.split(":", 1)[0] for f in multi.src_file} == {"img2txt", "vqa2", "refcoco"}
    ground_i, _, ground = one(listed, "eval-grounding")
    assert Path(ground.model_recover_path).parent == Path(multi.output_dir)
    assert multi_i < ground_i and ground.src_file == multi.src_file[-1].split(":", 1)[1]


def test_dry_run_ends_with_the_three_gpu_benchmarks(listed):
    kinds = [kind for _, (kind, _) in listed]
    assert kinds[-3:] == list(BENCHES)
    _, _, train = one(listed, "bench/train_step.py")
    assert train.device == "cuda" and train.bf16
    assert one(listed, "bench/decode.py")[2].device == "cuda"
    assert one(listed, "bench/extract.py")[2].device == "cuda"


def test_only_and_gpu_count(tmp_path):
    proc, cmds = dry_run(tmp_path, "--only", "fsdp,fsdp-convert", NGPU="4")
    assert proc.returncode == 0, proc.stderr
    assert len(cmds) == 2 and "--fsdp" in cmds[0] and cmds[1][3] == "convert-checkpoint"
    assert cmds[0][cmds[0].index("--nproc_per_node") + 1] == "4"
    for wrong in (["--bogus"], ["--only", "no-such-step"]):
        proc, cmds = dry_run(tmp_path, *wrong, NGPU="1")
        assert proc.returncode == 2 and wrong[-1] in proc.stderr and not cmds


def test_script_is_clean_shell():
    for script in (SCRIPT, SCRIPT.with_name("gpu_wheels.sh")):
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    # shellcheck is not a project dependency: it lints the script where it is installed.
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_tiny_bert_vocabulary_covers_toyworld(tmp_path):
    """The random-weight BERT the script trains from scratch knows every word ToyWorld
    writes, so no caption or question token becomes [UNK]."""
    from vlp.data.toyworld import ToyWorldConfig, generate
    from vlp.data.tokens import load_tokenizer

    generate(tmp_path / "tw", ToyWorldConfig(images=12, pretrain_images=4))
    helper = load("bench/gpu_check.py")
    assert helper.main(["tiny-bert", "--toyworld", str(tmp_path / "tw"),
                        "--out", str(tmp_path / "bert"), "--hidden", "32", "--layers", "2",
                        "--heads", "2"]) == 0
    config = json.loads((tmp_path / "bert" / "config.json").read_text())
    tokenizer = load_tokenizer(tmp_path / "bert")
    assert config["vocab_size"] == tokenizer.vocab_size and config["num_hidden_layers"] == 2
    texts = helper.toyworld_texts(tmp_path / "tw")
    ids = {i for text in texts for i in tokenizer(text, add_special_tokens=False)["input_ids"]}
    assert tokenizer.unk_token_id not in ids and len(texts) > 12 * 5


def test_key_figures_from_logs(tmp_path):
    helper = load("bench/gpu_check.py")
    bench = tmp_path / "bench.log"
    bench.write_text(
        "size                   UnifiedVLP    BertModel  ratio  MFU ours  MFU bert  GEMMs alone\n"
        "MiniLM L6 H384          2400.0/s    2170.0/s  1.11x      0.12      0.11         0.30\n"
        "BERT-base L12 H768       480.0/s     420.0/s  1.14x      0.29      0.25         0.50\n")
    assert helper.FIGURES["bench-train"](bench, None) == \
        "MiniLM 2400/s 1.11x MFU 0.12; BERT-base 480/s 1.14x MFU 0.29"
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": 5 * (i + 1), "loss": 4.0 - i, "samples_per_s": rate}
            for i, rate in enumerate([10.0, 300.0, 320.0, 310.0])]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # The first window (start-up) is left out of the median.
    assert helper.FIGURES["train"](bench, run) == "310 samples/s, loss 1.000 at step 20"
    assert helper.FIGURES["vqa"](bench, tmp_path / "nothing") == ""
