"""Localization from text: `vlp train --tasks refcoco` and `vlp eval-grounding` on a RefCOCO
laid out as distributed, the loss and Acc@0.5 against computations written out here."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch

from train_fixtures import make_inputs, train_argv
from vlp.cli.eval_grounding import main as eval_main
from vlp.data.features import open_store
from vlp.errors import VLPError
from vlp.eval.grounding_predict import grounding_metrics
from vlp.train.grounding import grounding_loss
from vlp.train.main import main as train_main

IMAGES = 48


def refcoco_of_store(root, store_path, images: int = IMAGES):
    """refcoco/refs(unc).p and instances.json for the fixture store's images: "the red
    circle" is the region whose first feature is highest, "the blue square" the lowest;
    the last 8 images are the val split."""
    store = open_store(store_path)
    image_rows, anns, refs = [], [], []
    for i in range(images):
        record = store[f"img_{i:04d}"]
        image_rows.append({"id": i, "file_name": f"img_{i:04d}.jpg", "width": 64, "height": 64})
        split = "train" if i < images - 8 else "val"
        for k, (text, j) in enumerate([("the red circle", int(np.argmax(record.features[:, 0]))),
                                        ("the blue square", int(np.argmin(record.features[:, 0])))]):
            x1, y1, x2, y2 = (float(v) for v in record.boxes[j])
            ann_id, ref_id = 100 * i + k, 2 * i + k
            anns.append({"id": ann_id, "image_id": i, "category_id": 1 + k, "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
            refs.append({"ref_id": ref_id, "ann_id": ann_id, "image_id": i, "split": split,
                         "category_id": 1 + k, "file_name": f"img_{i:04d}_{ref_id}.jpg",
                         "sent_ids": [ref_id],
                         "sentences": [{"sent_id": ref_id, "raw": text, "sent": text,
                                        "tokens": text.split(),
                                        "kind": "attribute" if k == 0 else "place"}]})
    store.close()
    folder = root / "refcoco"
    folder.mkdir(parents=True)
    with open(folder / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    (folder / "instances.json").write_text(json.dumps({
        "images": image_rows, "annotations": anns,
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]}))
    return folder / "refs(unc).p"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("grounding")
    inputs = make_inputs(root, images=IMAGES)
    refs = refcoco_of_store(root, inputs["features"])
    argv = train_argv(inputs, root / "run", "--tasks", "refcoco", "--num_train_epochs", "30",
                      "--s2s_prob", "0", "--bi_prob", "1", "--log_steps", "1000")
    argv[argv.index("--src_file") + 1] = str(refs)
    assert train_main(argv) == 0
    return inputs, refs, root


def eval_argv(inputs, refs, checkpoint, *extra):
    return ["--model_recover_path", str(checkpoint), "--src_file", str(refs),
            "--features", str(inputs["features"]), "--len_vis_input", "8", "--no_progress",
            "--num_workers", "0", *extra]


def test_a_tiny_model_finds_the_region_an_expression_names(trained, capsys):
    inputs, refs, root = trained
    checkpoint = root / "run" / "model.30"
    assert eval_main(eval_argv(inputs, refs, checkpoint, "--split", "train", "val")) == 0
    train = json.loads((root / "run" / "model.30.train.grounding_metrics.json").read_text())
    # Chance is about 1 in 4.5 regions; which region is meant depends on the features only.
    assert train["expressions"] == 80 and train["upper_bound"] == 100.0
    assert train["accuracy"] >= 90.0
    assert set(train["by_kind"]) == {"attribute", "place"}
    rows = json.loads((root / "run" / "model.30.val.grounding_results.json").read_text())
    assert len(rows) == 16 and {r["split"] for r in rows} == {"val"}
    store = open_store(inputs["features"])
    for r in rows:  # the box written is the chosen region's, in COCO's [x, y, w, h]
        boxes = store[f"img_{r['ref_id'] // 2:04d}"].boxes
        x, y, w, h = r["box"]
        assert np.isclose(boxes[:, :2], [x, y]).all(1).any()
        assert 0.0 < r["score"] <= 1.0
    assert "Acc@0.5" in capsys.readouterr().out


def test_the_loss_is_cross_entropy_over_the_overlapping_regions():
    scores = torch.tensor([[1.0, 2.0, 3.0, -1e30], [0.5, 0.0, -1.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    iou = torch.tensor([[0.6, 0.1, 0.7, 0.0], [0.2, 0.0, 0.9, 0.3], [0.1, 0.2, 0.0, 0.4]])
    loss, learnable = grounding_loss(scores, iou)

    def log_softmax(row, j):
        finite = [v for v in row if v > -1e29]
        return row[j] - math.log(sum(math.exp(v) for v in finite))

    # Row 0: half on regions 0 and 2; row 1: all on region 2; row 2 has none and is left out.
    first = -0.5 * (log_softmax([1.0, 2.0, 3.0], 0) + log_softmax([1.0, 2.0, 3.0], 2))
    second = -log_softmax([0.5, 0.0, -1.0, 2.0], 2)
    assert int(learnable) == 2
    assert math.isclose(float(loss), (first + second) / 2, rel_tol=1e-6)
    none, count = grounding_loss(scores[2:], iou[2:])
    assert int(count) == 0 and float(none) == 0.0


def test_accuracy_by_kind_counts_boxes_at_half_overlap():
    rows = [{"box": [0, 0, 10, 10], "truth": [0, 0, 10, 10], "kind": "place", "best_iou": 1.0},
            # IoU 50 / 150 = 1/3: wrong
            {"box": [0, 0, 10, 10], "truth": [5, 0, 10, 10], "kind": "place", "best_iou": 1.0},
            # IoU 80 / 100: right
            {"box": [0, 0, 10, 10], "truth": [0, 0, 10, 8], "kind": "relation", "best_iou": 0.4}]
    metrics = grounding_metrics(rows)
    assert metrics["by_kind"] == {"place": 50.0, "relation": 100.0}
    assert math.isclose(metrics["accuracy"], 200 / 3)
    assert math.isclose(metrics["upper_bound"], 200 / 3)


def test_src_file_must_be_a_refs_pickle(trained, tmp_path):
    inputs, refs, root = trained
    argv = train_argv(inputs, tmp_path / "run", "--tasks", "refcoco")
    with pytest.raises(VLPError, match=r"refs\(<split_by>\)\.p"):
        from vlp.train.args import build_parser, check
        check(build_parser().parse_args(argv))


def test_unknown_split_and_a_checkpoint_without_the_head_are_named(trained, capsys, tmp_path):
    from vlp.model import UnifiedVLP

    inputs, refs, root = trained
    checkpoint = root / "run" / "model.30"
    assert eval_main(eval_argv(inputs, refs, checkpoint, "--split", "testQ")) == 2
    assert "unknown RefCOCO split 'testQ'" in capsys.readouterr().err
    located = UnifiedVLP.from_pretrained(checkpoint)
    headless = UnifiedVLP(located.config.replace(grounding=False))
    headless.load_state_dict(located.state_dict(), strict=False)
    headless.save_pretrained(tmp_path / "captioner", tokenizer_dir=checkpoint)
    assert eval_main(eval_argv(inputs, refs, tmp_path / "captioner", "--split", "val")) == 2
    assert "no localization head" in capsys.readouterr().err
