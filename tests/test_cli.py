"""The `vlp` command: help for every subcommand, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib.metadata import entry_points

import pytest

from vlp.cli import COMMANDS, main


def vlp(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlp", *args], capture_output=True,
                          text=True, timeout=120, **kw)


def test_console_script_points_at_the_cli():
    (script,) = entry_points(group="console_scripts", name="vlp")
    assert script.value == "vlp.cli:main"


def test_help_lists_every_subcommand_and_each_has_help():
    listing = vlp("--help")
    assert listing.returncode == 0
    names = [c.replace("_", "-") for c in COMMANDS]
    for name in names:
        assert name in listing.stdout
        sub = vlp(name, "--help")
        assert sub.returncode == 0 and f"usage: vlp {name}" in sub.stdout


@pytest.mark.parametrize("args, names", [
    (["--images", "-3"], "--images"),
    (["--images", "many"], "--images"),
    (["--pretrain-images", "-1"], "--pretrain-images"),
    (["--size", "20"], "--size"),
    (["--answer-noise", "1.5"], "--answer-noise"),
    (["--image-format", "gif"], "--image-format"),
])
def test_bad_arguments_fail_on_one_line_and_write_nothing(tmp_path, args, names):
    result = vlp("toyworld", "--out", str(tmp_path / "w"), *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and names in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_fails_on_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = vlp("toyworld", "--out", str(blocker / "w"), "--images", "4")
    assert result.returncode == 2 and "not a directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_failure_mid_run_leaves_nothing_behind(tmp_path, monkeypatch):
    from vlp.data.toyworld import formats

    def broken(*a, **k):
        raise OSError(28, "No space left on device", "annotations/vqa")

    monkeypatch.setattr(formats, "vqa", broken)
    status = main(["toyworld", "--out", str(tmp_path / "deep" / "w"), "--images", "8",
                   "--quiet"])
    assert status == 2 and list(tmp_path.iterdir()) == []


def test_killed_run_leaves_nothing_and_the_rerun_completes(tmp_path):
    out = tmp_path / "w"
    cmd = [sys.executable, "-m", "vlp", "toyworld", "--out", str(out), "--images", "3000",
           "--pretrain-images", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not any(tmp_path.glob(".w.partial-*/images/*")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    small = vlp("toyworld", "--out", str(out), "--images", "8", "--pretrain-images", "0",
                "--quiet")
    assert small.returncode == 0, small.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # the dead run's temp is gone
    assert "images      8 (" in small.stdout
    instances = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert f"objects in {len(instances['categories'])} categories" in small.stdout
