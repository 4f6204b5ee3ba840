"""The main job in --tiny mode: every stage runs, the summary, resume, the report."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlp.cli import main
from vlp.errors import VLPError
from vlp.quickstart import STAGES


@pytest.fixture(scope="module")
def tiny_job(tiny_quickstart):
    return tiny_quickstart  # conftest.py: built once per session, shared with test_serve.py


def test_every_stage_reports_a_key_metric(tiny_job):
    out, printed, _ = tiny_job
    table = printed[printed.index("stage "):printed.index("test split ")]
    for stage in STAGES:
        assert f"\n{stage.name} " in table, stage.name
    assert "40 images" in table and "total" in table
    assert "MLM loss" in table and "unigram baseline" in table and "loader wait" in table
    assert "test (beam 3) CIDEr" in table and "test CIDEr (beam 3)" in table
    rows = {line.split()[0]: line for line in table.splitlines() if line.strip()}
    assert "captions fully true" in rows["caption"] and "captions fully true" in rows["scst"]
    assert "test accuracy" in rows["vqa"]
    assert "test Acc@0.5" in rows["grounding"] and "val " in rows["grounding"]
    for kind in ("attribute", "place", "relation"):
        assert f"{kind} " in rows["grounding"], kind
    for kind in ("colour", "shape", "exists", "count", "position"):
        assert f"{kind} " in rows["vqa"], kind
    # --ablation: the same finetuning from BERT alone, compared with the pretrained models
    # after the summary, and left out of the job's total.
    assert "from BERT: caption CIDEr" in rows["ablation"]
    comparison = printed[printed.index("test split "):]
    assert "pretrained" in comparison and "from BERT" in comparison
    for measure in ("caption CIDEr", "captions fully true", "VQA accuracy", "position"):
        assert measure in comparison, measure
    seconds = {name: float(line.split()[1].rstrip("s")) for name, line in rows.items()
               if name not in ("stage", "total") and not name.startswith("-")}
    total = float(rows["total"].split()[1].rstrip("s"))
    assert total == pytest.approx(sum(seconds.values()) - seconds["ablation"], abs=0.5)
    assert len(list((out / "ablation" / "vqa").glob("step.*.test.vqa_metrics.json"))) == 1
    assert (out / "pretrain" / "model.1" / "model.safetensors").is_file()
    caption = caption_checkpoint(out)
    assert (caption.parent / f"{caption.name}.test.beam3.results.json").is_file()


def caption_checkpoint(out):
    """The caption stage's checkpoint: its multi-task run stops at its steps."""
    return next(p for p in (out / "caption").glob("step.*") if p.is_dir())


def test_the_caption_stage_keeps_localizing_beside_the_captions(tiny_job):
    import json

    out, printed, _ = tiny_job
    row = next(line for line in printed.splitlines() if line.startswith("caption "))
    assert "centre error" in row
    opt = json.loads((out / "caption" / "opt.json").read_text())
    assert opt["tasks"] == "img2txt,refcoco" and opt["grounding_objective"] == "centre"
    captions, expressions = opt["task_weights"]
    assert opt["max_steps"] == captions + expressions and expressions > 0
    log = [json.loads(line) for line in (out / "caption" / "log.jsonl").read_text().splitlines()]
    assert any("centre_error" in r for r in log) and any("img2txt_loss" in r for r in log)


def test_a_second_run_reuses_every_stage(tiny_job, capsys):
    out, _, first_seconds = tiny_job
    start = time.perf_counter()
    assert main(["quickstart", "--tiny", "--ablation", "--out", str(out)]) == 0
    again = time.perf_counter() - start
    printed = capsys.readouterr().out
    assert "(kept)" in printed and "resuming from" in printed
    assert again < first_seconds  # no stage retrained


# Every stage trains one epoch in --tiny; the caption and VQA stages' multi-task runs stop
# at their steps.
TRAINING_STAGES = {"pretrain": "model", "localize": "model", "caption": "step", "scst": "model",
                   "vqa": "step", "ablation/caption": "step", "ablation/vqa": "step"}


def test_the_job_keeps_each_stages_last_checkpoint_as_weights(tiny_job):
    import json
    import re

    out, _, _ = tiny_job
    for stage, prefix in TRAINING_STAGES.items():
        run = out / stage
        kept = sorted(p.name for p in run.iterdir() if re.fullmatch(r"(model|step)\.\d+", p.name))
        assert len(kept) == 1 and kept[0].startswith(prefix + "."), (stage, kept)
        assert json.loads((run / "opt.json").read_text())["keep_checkpoints"] == 1
        assert (run / kept[0] / "model.safetensors").is_file()
        assert (run / kept[0] / "trainer_state.json").is_file()
        assert not (run / kept[0] / "trainer_state.pt").exists(), stage
    bundle = json.loads((out / "bundle.json").read_text())
    vqa = next(p for p in (out / "vqa").glob("step.*") if p.is_dir()).name
    assert bundle["caption_model"] == "scst/model.1"
    # One model answers and locates: the VQA stage trained both.
    assert bundle["vqa_model"] == bundle["grounding_model"] == f"vqa/{vqa}"


def test_the_report_has_pictures_captions_and_curves(tiny_job):
    out, _, _ = tiny_job
    page = (out / "report" / "index.html").read_text()
    for heading in ("Stages", "Caption metrics", "Are the captions true?", "VQA accuracy",
                    "Pretrained or not", "Questions", "Training curves", "Test images",
                    "Localization from text"):
        assert heading in page
    assert "Green: the box found" in page
    pictures = list((out / "report" / "img").glob("*.png"))
    assert any(p.name == "curves.png" for p in pictures) and len(pictures) >= 3
    for p in pictures:
        assert f"img/{p.name}" in page and p.stat().st_size > 1000
    assert "references:" in page and "cross-entropy:" in page
    assert any(p.name.startswith("located_") for p in pictures)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_report_renders_in_headless_chromium(tiny_job, tmp_path):
    import numpy as np
    from PIL import Image

    # .ci/run installs Debian's chromium where it is missing; without it this test fails.
    assert CHROMIUM is not None, "Chromium is not installed (apt-get install chromium)"
    out, _, _ = tiny_job
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1200,1600",
                    (out / "report" / "index.html").as_uri()], check=True, timeout=120,
                   capture_output=True)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 5  # not a blank page


def test_caption_any_image_with_the_bundle(tiny_job, tmp_path):
    """A real photograph (matplotlib's sample portrait) and a ToyWorld image."""
    import json

    import matplotlib.cbook

    out, _, _ = tiny_job
    photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    toy = next((out / "toyworld" / "images").glob("toy_*.jpg"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    run = subprocess.run([sys.executable, "-m", "vlp", "caption", str(photo), str(toy), str(broken), "--bundle",
                          str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1  # one of three failed
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["image"] for r in lines] == [str(photo), str(toy)]
    settings = json.loads((out / "bundle.json").read_text())["extract"]
    for r in lines:
        assert isinstance(r["caption"], str)
        assert settings["min_boxes"] <= len(r["regions"]) <= settings["max_boxes"]
        assert all(len(reg["box"]) == 4 and reg["label"] for reg in r["regions"])
    assert "broken.jpg" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_the_bundle_captions_a_test_image_as_the_job_decoded_it(tiny_job):
    """`vlp caption --bundle` runs the detector on the JPEG and the job's beam search
    (trigrams not repeated, CAPTION_DECODING): the caption the job scored, word for word."""
    import json

    from vlp.bundle import ImageCaptioner, load_bundle
    from vlp.quickstart import CAPTION_DECODING

    out, _, _ = tiny_job
    bundle = load_bundle(out)
    assert {k: getattr(bundle, k) for k in CAPTION_DECODING} == CAPTION_DECODING
    scored = json.loads((out / "scst" / "model.1.test.beam3.results.json").read_text())
    images = {im["cocoid"]: im["filename"] for im in json.loads(
        (out / "toyworld" / "annotations" / "dataset_toy.json").read_text())["images"]}
    captioner = ImageCaptioner(bundle)
    assert captioner.generator.s.forbid_ignore == tuple(
        captioner.tokenizer.convert_tokens_to_ids([","]))
    for row in scored[:3]:
        path = out / "toyworld" / "images" / images[row["image_id"]]
        assert captioner.caption(path)["caption"] == row["caption"], row["image_id"]
    bundle.forbid_ignore_word = "qqqzzz"
    with pytest.raises(VLPError, match=r"bundle.json: forbid_ignore_word: qqqzzz not in the"):
        ImageCaptioner(bundle)


def test_ask_about_an_image_with_the_bundle(tiny_job):
    import json

    out, _, _ = tiny_job
    toy = next((out / "toyworld" / "images").glob("toy_*.jpg"))
    run = subprocess.run([sys.executable, "-m", "vlp", "ask", str(toy), "how many shapes are there",
                          "--bundle", str(out), "--json"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    vqa = next(p for p in (out / "vqa").glob("step.*") if p.is_dir())
    vocab = json.loads((vqa / "answer_vocab.json").read_text())["answers"]
    assert result["answer"] in vocab and len(result["candidates"]) >= 1
    assert result["regions"] and result["question"] == "how many shapes are there"


def test_locate_a_shape_with_the_bundle_and_draw_its_box(tiny_job, tmp_path):
    import json

    import numpy as np
    from PIL import Image

    out, _, _ = tiny_job
    toy = next((out / "toyworld" / "images").glob("toy_*.jpg"))
    drawn = tmp_path / "found.png"
    run = subprocess.run([sys.executable, "-m", "vlp", "locate", str(toy), "the red circle",
                          "--bundle", str(out), "--json", "--draw", str(drawn), "--top", "2"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    # The box is one of the regions the detector found, the most probable of them.
    assert result["box"] in [r["box"] for r in result["regions"]]
    probabilities = [c["probability"] for c in result["candidates"]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.001
    assert len(result["candidates"]) == min(2, len(result["regions"]))
    picture = np.asarray(Image.open(drawn).convert("RGB"))
    width, height = Image.open(toy).size
    assert picture.shape[:2] == (2 * height, 2 * width)
    x1, y1 = (int(round(2 * v)) for v in result["box"][:2])
    green = picture[max(y1, 0):y1 + 3, max(x1, 0) + 4:x1 + 8]  # the top edge, past the corner
    assert (green == (60, 180, 75)).all(-1).any()
    # Without a localization model the bundle says so in one line.
    bundle = json.loads((out / "bundle.json").read_text())
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("detector", "caption_model"):
        bundle[name] = str((out / bundle[name]).resolve())
    bundle["grounding_model"] = None
    (bare / "bundle.json").write_text(json.dumps(bundle))
    run = subprocess.run([sys.executable, "-m", "vlp", "locate", str(toy), "the red circle",
                          "--bundle", str(bare)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "has no localization model" in run.stderr


PROBES = Path(__file__).parents[1] / "scripts" / "toyworld_position_probes.py"


def _position_probes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("toyworld_position_probes", PROBES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_position_probe_reads_what_is_linear_and_not_what_is_not():
    import numpy as np

    probes = _position_probes()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 20))
    linear = x @ rng.normal(size=20)
    pred, truth = probes.held_out(x, linear)
    assert 1 - np.mean((pred - truth) ** 2) / np.var(truth) > 0.99
    coin = np.sign(rng.normal(size=2000))  # nothing to read
    pred, truth = probes.held_out(x, coin)
    assert abs(np.mean(np.sign(pred) == truth) - 0.5) < 0.06


def test_the_position_probes_run_on_the_main_job(tiny_job):
    out, _, _ = tiny_job
    run = subprocess.run([sys.executable, str(PROBES), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"checkpoint {out / 'pretrain' / 'model.1'}"
    r2 = [float(line.rsplit(" ", 1)[1]) for line in lines if "R^2" in line]
    assert len(r2) == 2 and all(v <= 1.0 for v in r2)
    filled = [line for line in lines if "masked spatial word" in line]
    assert len(filled) == 1 and 0.0 <= float(filled[0].rsplit(" ", 1)[1]) <= 1.0


PLACE_READING = Path(__file__).parents[1] / "scripts" / "toyworld_place_reading.py"


def test_the_place_reading_probe_asks_about_every_drawn_test_shape(tiny_job):
    import json
    import re

    out, _, _ = tiny_job
    ann = out / "toyworld" / "annotations"
    test_files = {im["filename"] for im in json.loads((ann / "dataset_toy.json").read_text())["images"]
                  if im["split"] == "test"}
    shapes = sum(len(s["objects"]) for s in json.loads((ann / "scenes_toy.json").read_text())
                 if s["file_name"] in test_files)
    run = subprocess.run([sys.executable, str(PLACE_READING), str(out),
                          str(caption_checkpoint(out)), "--layers"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    summary, cells, chosen, regions, words = run.stdout.splitlines()[-5:]
    layers = json.loads((caption_checkpoint(out) / "config.json").read_text())[
        "num_hidden_layers"]
    for line, what in ((regions, "region slots"), (words, "the [MASK] after")):
        assert what in line
        shown = line.split("by layer ")[1].split()
        assert len(shown) == layers and all(0 <= float(a) <= 100 for a in shown)
    right, total = map(int, re.search(r"the right place for (\d+) of (\d+) shapes", summary).groups())
    assert total == shapes > 0 and 0 <= right <= total
    per_cell = json.loads(cells)
    assert len(per_cell) == 9
    assert sum(int(v.split("/")[1]) for v in per_cell.values()) == shapes
    assert sum(int(v.split("/")[0]) for v in per_cell.values()) == right
    assert sum(json.loads(chosen.split(":", 1)[1]).values()) == shapes


def test_the_layer_probe_reads_a_cell_that_is_there_and_not_one_that_is_not():
    """The linear probe behind --layers: a cell written into a few of 64 noisy dimensions
    is read back; labels unrelated to the states stay near chance (1/9)."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("place_reading", PLACE_READING)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 9, 1200)
    states = rng.normal(size=(1200, 64)).astype(np.float32)
    states[:, :9] += 4.0 * np.eye(9, dtype=np.float32)[cells]
    assert script.probe_accuracy(states[:800], cells[:800], states[800:], cells[800:]) > 90
    unrelated = rng.integers(0, 9, 1200)
    assert script.probe_accuracy(states[:800], unrelated[:800], states[800:], unrelated[800:]) < 25


def test_the_training_precision_is_chosen_once_per_job(tmp_path, monkeypatch):
    from vlp import quickstart
    from vlp import precision

    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 0.7)
    first = quickstart.choose_precision(tmp_path)
    assert first == {"precision": "fp32", "bf16_speedup": 0.7, "forced": False}
    assert "--bf16" not in quickstart.speed_flags(first)
    # A resumed job trains as it started, whatever a new measurement would say.
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 8.0)
    assert quickstart.choose_precision(tmp_path) == first
    fresh = quickstart.choose_precision(tmp_path / "other")
    assert fresh["precision"] == "bf16" and "--bf16" in quickstart.speed_flags(fresh)
    # --precision fp32 times the slower precision on a CPU where bfloat16 is faster; a
    # job started in one precision is not continued in the other.
    forced = quickstart.choose_precision(tmp_path / "forced", "fp32")
    assert forced["precision"] == "fp32" and forced["forced"]
    assert "--bf16" not in quickstart.speed_flags(forced)
    assert quickstart.choose_precision(tmp_path / "forced") == forced
    with pytest.raises(VLPError, match=r"--precision bf16: .*forced was started in fp32"):
        quickstart.choose_precision(tmp_path / "forced", "bf16")


def test_every_training_stage_trains_with_the_jobs_seed(tiny_job, tmp_path):
    import json

    from vlp import quickstart

    out, printed, _ = tiny_job
    assert f"; seed {quickstart.DEFAULT_SEED}\n" in printed
    trained = sorted(out.glob("*/opt.json")) + sorted(out.glob("ablation/*/opt.json"))
    assert {p.parent.name for p in trained} >= {"pretrain", "localize", "caption", "scst", "vqa"}
    assert len(trained) >= 7  # and the ablation's caption and VQA runs
    assert {json.loads(p.read_text())["seed"] for p in trained} == {quickstart.DEFAULT_SEED}
    # `vlp quickstart --seed N` reaches every `vlp train`; a job is resumed with its seed.
    assert quickstart.speed_flags({"precision": "fp32"}, 7)[-2:] == ["--seed", "7"]
    assert quickstart.choose_seed(tmp_path / "s", 7) == 7
    assert quickstart.choose_seed(tmp_path / "s", 7) == 7
    with pytest.raises(VLPError, match=r"--seed 42: .*s was started with seed 7"):
        quickstart.choose_seed(tmp_path / "s")
    # A job from before the seed was kept ran with the default.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "precision.json").write_text('{"precision": "fp32"}')
    with pytest.raises(VLPError, match="started with seed 42"):
        quickstart.choose_seed(tmp_path / "old", 3)


WHERE = Path(__file__).parents[1] / "scripts" / "toyworld_where_questions.py"


def test_the_grid_question_comparison_runs_on_the_main_job(tiny_job, tmp_path):
    import json

    out, _, _ = tiny_job
    run = subprocess.run([sys.executable, str(WHERE), str(out), "--epochs", "1", "--batch", "16",
                          "--box_frequencies", "0", "2", "--with_vqa", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if "box_frequencies" in line]
    assert len(rows) == 2 and "VLP's box+class vector" in rows[0] and "2 octaves" in rows[1]
    for line in rows:
        test, train = (float(part.split()[-1].rstrip("%")) for part in line.split(":")[1].split(","))
        assert 0.0 <= test <= 100.0 and 0.0 <= train <= 100.0
    # --with_vqa: the run's own VQA questions joined the training, and are scored by type.
    vqa = [line for line in run.stdout.splitlines() if "VQA test questions" in line]
    assert len(vqa) == 2 and all("is the" in line for line in vqa)
    saved = json.loads((tmp_path / "box2" / "model.1" / "config.json").read_text())
    assert saved["region_box_frequencies"] == 2
