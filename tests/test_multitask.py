"""One model trained on captions, VQA and localization at once (`--tasks img2txt,vqa2,
refcoco`): the batch order, two gloo ranks against one process, exact resume, one
checkpoint every task evaluates from, and the flags' errors."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest
import torch

from test_grounding import refcoco_of_store
from test_train_runs import free_port, max_diff, ranks, weights, with_batch
from train_fixtures import make_inputs, train_argv, vqa_files
from vlp.cli.decode import main as decode_main
from vlp.cli.eval_grounding import main as grounding_main
from vlp.cli.eval import add_arguments, evaluate
from vlp.cli.eval import main as eval_main
from vlp.cli.eval_vqa import main as vqa_main
from vlp.errors import VLPError
from vlp.model import UnifiedVLP
from vlp.train.args import build_parser, check
from vlp.train.log import read_metrics
from vlp.train.main import main as train_main
from vlp.train.multitask import TaskBatches

TASKS = "img2txt,vqa2,refcoco"


def build_eval_parser():
    from vlp.cli.args import ArgumentParser

    return add_arguments(ArgumentParser())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multitask")
    data = make_inputs(root, images=16)
    data["vqa"] = vqa_files(root, data["features"], 16)
    data["refs"] = refcoco_of_store(root, data["features"], images=16)  # 8 train images
    return data


def multi_argv(inputs, out, *extra) -> list[str]:
    argv = train_argv(inputs, out, "--tasks", TASKS, "--vqa_annotations",
                      str(inputs["vqa"]["annotations"]), "--image_map", str(inputs["src"]),
                      "--num_train_epochs", "2", "--log_steps", "1", "--deterministic", *extra)
    at = argv.index("--src_file") + 1
    argv[at:at + 1] = [f"img2txt:{inputs['src']}", f"vqa2:{inputs['vqa']['questions']}",
                       f"refcoco:{inputs['refs']}"]
    return argv


def test_batches_visit_each_example_once_and_every_rank_runs_the_same_task():
    sizes, micro = [10, 8, 4], 2
    one = TaskBatches(sizes, 2 * micro, seed=5)
    shards = [TaskBatches(sizes, micro, 2, rank, seed=5) for rank in (0, 1)]

    def task_of(i):
        return 0 if i < 10 else 1 if i < 18 else 2

    orders = []
    for epoch in (0, 1):
        for sampler in (one, *shards):
            sampler.set_position(epoch, 0)
        plan = one.plan()
        assert sorted(i for b in plan for i in b) == list(range(22))  # each once
        assert all(len({task_of(i) for i in b}) == 1 for b in plan)  # one task a batch
        orders.append([task_of(b[0]) for b in plan])
        # Rank 0's and rank 1's batches together are the one process's, step by step.
        by_rank = [s.plan() for s in shards]
        assert len(by_rank[0]) == len(by_rank[1]) == len(plan) == 3 + 2 + 1
        for whole, a, b in zip(plan, *by_rank):
            assert sorted(whole) == sorted(a + b)
    assert orders[0] != orders[1]  # the order is drawn again each epoch
    # Resumed at batch 2, the rest of the epoch is the uninterrupted one's.
    one.set_position(1, 2 * 2 * micro)
    full = TaskBatches(sizes, 2 * micro, seed=5)
    full.set_position(1, 0)
    assert list(one) == full.plan()[2:] and len(one) == len(full.plan()) - 2


def test_a_tasks_own_batch_size_shards_over_ranks_as_the_shared_one_does():
    sizes = [12, 8]
    one = TaskBatches(sizes, 2, seed=3, task_micro=[4, 2])
    shards = [TaskBatches(sizes, 1, 2, rank, seed=3, task_micro=[2, 1]) for rank in (0, 1)]
    plan = one.plan()
    assert sorted(i for b in plan for i in b) == list(range(20))
    assert sorted(len(b) for b in plan) == [2] * 4 + [4] * 3  # task 0 in fours, task 1 in twos
    for whole, a, b in zip(plan, *(s.plan() for s in shards)):
        assert sorted(whole) == sorted(a + b)


def test_task_weights_draw_each_steps_task_by_weight():
    sampler = TaskBatches([400, 400], 1, seed=0, weights=[3.0, 1.0])
    drawn = Counter(i >= 400 for b in sampler.plan() for i in b)
    assert len(sampler) == 800 and 0.70 < drawn[False] / 800 < 0.80


@pytest.fixture(scope="module")
def trained(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("multi") / "run"
    assert train_main(multi_argv(inputs, out)) == 0
    return out


def test_one_checkpoint_holds_every_head_and_each_task_is_evaluated_from_it(inputs, trained,
                                                                           tmp_path):
    rows = read_metrics(trained)
    # An epoch: 32 captions, 32 questions and 16 expressions in batches of 8.
    assert [r["step"] for r in rows] == list(range(1, 21))
    seen = Counter(k for r in rows for k in r if k.endswith("_loss"))
    assert set(seen) == {"img2txt_loss", "vqa2_loss", "refcoco_loss"}
    model = UnifiedVLP.from_pretrained(trained / "model.2")
    vocab = json.loads((trained / "model.2" / "answer_vocab.json").read_text())["answers"]
    assert model.config.grounding and model.config.vqa_answers == len(vocab) > 1
    common = ["--model_recover_path", str(trained / "model.2"), "--features",
              str(inputs["features"]), "--len_vis_input", "8", "--no_progress",
              "--num_workers", "0", "--batch_size", "32"]
    # Each task's own command, then `vlp eval` of all three into another directory.
    alone, together = tmp_path / "alone", tmp_path / "together"
    assert vqa_main([*common, "--src_file", str(inputs["vqa"]["questions"]),
                     "--vqa_annotations", str(inputs["vqa"]["annotations"]),
                     "--image_map", str(inputs["src"]), "--split", "train",
                     "--output_dir", str(alone)]) == 0
    assert grounding_main([*common, "--src_file", str(inputs["refs"]), "--split", "val",
                           "--output_dir", str(alone)]) == 0
    assert decode_main([*common, "--src_file", str(inputs["src"]), "--split", "train",
                        "--no_java", "--output_dir", str(alone)]) == 0
    assert eval_main([*common, "--src_file", f"img2txt:{inputs['src']}",
                      f"vqa2:{inputs['vqa']['questions']}", f"refcoco:{inputs['refs']}",
                      "--split", "train", "refcoco:val", "--no_java",
                      "--vqa_annotations", str(inputs["vqa"]["annotations"]),
                      "--image_map", str(inputs["src"]), "--output_dir", str(together)]) == 0
    metrics = json.loads((together / "model.2.eval.json").read_text())
    vqa = json.loads((alone / "model.2.train.vqa_metrics.json").read_text())
    assert metrics["vqa2"]["train"]["overall"] == vqa["overall"]
    assert metrics["refcoco"]["val"] == json.loads(
        (alone / "model.2.val.grounding_metrics.json").read_text())
    for name in ("model.2.train.beam1.results.json", "model.2.train.vqa_results.json",
                 "model.2.val.grounding_results.json"):
        assert (together / name).read_text() == (alone / name).read_text(), name


@pytest.mark.parametrize("change, message", [
    (["--src_file", "dataset.json"], "--src_file dataset.json: give TASK:FILE"),
    (["--split", "test", "vqa2:val"], "--split vqa2:val: no --src_file vqa2:FILE"),
    (["--split", "refcoco:val"], "--split: no split for img2txt"),
    (["--src_file", "img2txt:a.json", "vqa2:q1.json", "vqa2:q2.json", "--split", "test"],
     "name each of the 2 vqa2 question files' split"),
    (["--src_file", "img2txt:a.json", "img2txt:b.json"], "img2txt is evaluated on one file"),
])
def test_eval_names_a_file_or_split_it_cannot_use(inputs, trained, tmp_path, change, message):
    argv = ["--model_recover_path", str(trained / "model.2"), "--features",
            str(inputs["features"]), "--src_file", f"img2txt:{inputs['src']}",
            f"refcoco:{inputs['refs']}"]
    with pytest.raises(VLPError, match=message):
        evaluate(build_eval_parser().parse_args(argv + change))


def test_two_ranks_equal_one_process_with_the_doubled_batch(inputs, trained, tmp_path):
    procs = ranks(with_batch(multi_argv(inputs, tmp_path / "two"), 4), 2, free_port(),
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    assert max_diff(weights(trained, "model.2"), weights(tmp_path / "two", "model.2")) <= 1e-6


def test_a_task_rate_and_dropout_apply_to_that_tasks_steps_alone(inputs, tmp_path):
    """Adam's first step moves each weight by the rate times a function of its gradient, so
    the step moves by a task's own rate (and dropout) exactly when its batch is that task's."""
    base = multi_argv(inputs, tmp_path / "a", "--max_steps", "1", "--warmup_proportion", "0")
    assert train_main(base) == 0
    first = next(t for t in TASKS.split(",") if f"{t}_loss" in read_metrics(tmp_path / "a")[0])
    others = [f"{t}:1e-2" for t in TASKS.split(",") if t != first]

    def run(name, *flags):
        argv = multi_argv(inputs, tmp_path / name, "--max_steps", "1", "--warmup_proportion", "0",
                          *flags)
        assert train_main(argv) == 0
        return weights(tmp_path / name, "step.1")

    # Dropout 0.1 but on the first task's batches, which also run at twice the rate.
    two = run("b", "--drop_prob", "0.1", "--task_drop_probs", f"{first}:0",
              "--task_learning_rates", f"{first}:2e-3", *others)
    three = run("c", "--task_learning_rates", f"{first}:3e-3")
    one = weights(tmp_path / "a", "step.1")
    moved = 0
    for k in one:
        assert torch.allclose(three[k] - one[k], 2 * (two[k] - one[k]), atol=1e-6), k
        moved += int((two[k] != one[k]).any())
    assert moved > 10


class Crash(Exception):
    pass


def test_a_run_stopped_mid_epoch_resumes_to_the_uninterrupted_result(inputs, trained, tmp_path,
                                                                     monkeypatch):
    from vlp.train.loop import Trainer

    out = tmp_path / "run"
    after_step = Trainer._after_step

    def stop_at_step_8(self, bar):
        after_step(self, bar)
        if self.pos.step == 8:
            raise Crash

    monkeypatch.setattr(Trainer, "_after_step", stop_at_step_8)
    with pytest.raises(Crash):
        train_main(multi_argv(inputs, out, "--save_steps", "5"))
    monkeypatch.undo()
    assert (out / "step.5").is_dir() and not (out / "model.1").exists()
    assert train_main(multi_argv(inputs, out, "--save_steps", "5")) == 0
    assert max_diff(weights(trained, "model.2"), weights(out, "model.2")) == 0.0


@pytest.mark.parametrize("change, message", [
    (lambda a: a.__setitem__(a.index("--src_file") + 1, "dataset_toy.json"),
     "each file names its task, as img2txt:FILE"),
    (lambda a: a.__setitem__(a.index("--tasks") + 1, "img2txt,vqa2,refcoco,vqa2"),
     "names a task twice"),
    (lambda a: a.__setitem__(a.index("--tasks") + 1, "img2txt,gqa"), "gqa is not one of"),
    (lambda a: a.extend(["--task_weights", "1", "2"]), "one positive weight per task"),
    (lambda a: a.extend(["--fsdp"]), "--fsdp trains one task"),
    (lambda a: a.extend(["--task_learning_rates", "img2txt:3e-4", "gqa:1e-4"]),
     "--task_learning_rates gqa:1e-4: give TASK:VALUE"),
    (lambda a: a.extend(["--task_drop_probs", "vqa2:1.5"]), "VALUE a rate in"),
    (lambda a: a.extend(["--task_batch_sizes", "img2txt:3", "--gradient_accumulation_steps",
                         "2"]), "--task_batch_sizes img2txt:3: .* a multiple of"),
])
def test_flags_that_do_not_fit_several_tasks_are_named(inputs, tmp_path, change, message):
    argv = multi_argv(inputs, tmp_path / "run")
    change(argv)
    with pytest.raises(VLPError, match=message):
        check(build_parser().parse_args(argv))
