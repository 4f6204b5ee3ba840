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


# --grounding_objective centre: the expression read left to right, its final [SEP]
# regressing the referent's centre; the region nearest the prediction is the answer.

@pytest.fixture(scope="module")
def centred(trained):
    inputs, refs, root = trained
    argv = train_argv(inputs, root / "centre", "--tasks", "refcoco", "--num_train_epochs", "100",
                      "--s2s_prob", "0", "--bi_prob", "1", "--log_steps", "1000",
                      "--grounding_objective", "centre", "--region_location", "normed",
                      "--box_frequencies", "3")
    argv[argv.index("--src_file") + 1] = str(refs)
    assert train_main(argv) == 0
    return root / "centre" / "model.100"


def test_a_tiny_model_learns_the_referents_centre(trained, centred, capsys):
    from vlp.model import UnifiedVLP

    inputs, refs, root = trained
    config = UnifiedVLP.from_pretrained(centred).config
    assert config.grounding_centre and not config.grounding
    assert eval_main(eval_argv(inputs, refs, centred, "--split", "train")) == 0
    assert "centre error" in capsys.readouterr().out
    metrics = json.loads((centred.parent / "model.100.train.grounding_metrics.json").read_text())
    rows = json.loads((centred.parent / "model.100.train.grounding_results.json").read_text())
    # One centre for every expression (the best constant: the median) errs this much.
    truth = np.array([r["true_centre"] for r in rows])
    constant = np.abs(truth - np.median(truth, 0)).sum(1).mean()
    assert metrics["centre_error"] < constant / 4
    assert metrics["accuracy"] >= 85.0
    store = open_store(inputs["features"])
    for r in rows:  # the true centre is the referent box's, over the image's 64 x 64 pixels
        x, y, w, h = r["truth"]
        assert np.allclose(r["true_centre"], [(x + w / 2) / 64, (y + h / 2) / 64], atol=1e-6)
        # and the region chosen is the one whose centre is nearest the predicted centre
        boxes = store[r["image"]].boxes
        middle = np.stack([boxes[:, [0, 2]].mean(1), boxes[:, [1, 3]].mean(1)], 1) / 64
        nearest = boxes[np.abs(middle - r["centre"]).sum(1).argmin()]
        assert np.allclose(r["box"][:2], nearest[:2])


def test_the_centre_is_read_from_the_final_sep_of_a_left_to_right_reading(centred):
    """The loss by hand: the encoder run seq2seq, the head applied at [SEP], 4 x L1."""
    from vlp.train.grounding import CENTRE_LOSS_SCALE, GroundingTask
    from vlp.model import UnifiedVLP

    model = UnifiedVLP.from_pretrained(centred).eval()
    torch.manual_seed(0)
    b, r, t = 3, 4, 5
    lengths = torch.tensor([5, 3, 4])
    text = torch.randint(5, model.config.vocab_size, (b, t))
    text[torch.arange(t)[None] >= lengths[:, None]] = 0
    text[torch.arange(b), lengths - 1] = model.config.sep_token_id
    features = torch.randn(b, r, model.config.region_feature_dim)
    locations = torch.randn(b, r, model.config.region_input_dim)
    regions = torch.tensor([4, 2, 3])
    target = torch.rand(b, 2)
    with torch.no_grad():
        out = GroundingTask(model, "centre")(text, lengths, features, locations, regions,
                                             torch.zeros(b, r), target)
        hidden = model(text, lengths, features, locations, regions, torch.ones(b, dtype=torch.bool))
        # [CLS], the r region slots, [SEP], then the text: its final [SEP] is at r + 1 + length
        final = hidden[torch.arange(b), r + 1 + lengths]
        expected = model.centre_head(final)
        # read left to right: the image block never sees the text, the final [SEP] does
        other = text.clone()
        other[:, 0] = (text[:, 0] + 1) % model.config.vocab_size
        again = model(other, lengths, features, locations, regions, torch.ones(b, dtype=torch.bool))
    assert torch.allclose(again[:, :r + 2], hidden[:, :r + 2], atol=1e-6)
    assert not torch.allclose(model.centre_head(again[torch.arange(b), r + 1 + lengths]), expected)
    loss = CENTRE_LOSS_SCALE * (expected - target).abs().sum(1).mean()
    assert torch.allclose(out["loss"], loss, atol=1e-5)


def test_centre_scores_prefer_the_nearest_region_and_never_padding():
    from vlp.model.grounding import centre_scores

    predicted = torch.tensor([[0.2, 0.8], [0.9, 0.1]])
    regions = torch.tensor([[[0.9, 0.9], [0.25, 0.7], [0.2, 0.8]],
                            [[0.5, 0.5], [0.85, 0.2], [0.9, 0.1]]])
    scores = centre_scores(predicted, regions, torch.tensor([3, 2]))
    assert scores[0].argmax() == 2 and scores[1].argmax() == 1  # slot 2 is padding in row 1
    assert math.isclose(float(scores[0, 1]), -0.15, rel_tol=1e-5)
    assert float(scores[1, 2]) == torch.finfo(torch.float32).min


def test_a_finetuned_centre_model_keeps_its_head_and_eval_picks_it(trained, centred, tmp_path,
                                                                    capsys):
    """A caption run from the centre model carries the centre head unchanged; eval-grounding
    finds it (auto) and names a head the checkpoint lacks."""
    from vlp.model import UnifiedVLP

    inputs, refs, root = trained
    argv = train_argv(inputs, tmp_path / "captions", "--model_recover_path", str(centred),
                      "--num_train_epochs", "1", "--log_steps", "1000")
    assert train_main(argv) == 0
    before, after = UnifiedVLP.from_pretrained(centred), UnifiedVLP.from_pretrained(
        tmp_path / "captions" / "model.1")
    assert after.config.grounding_centre
    for name, value in before.centre_head.state_dict().items():
        assert torch.equal(value, after.centre_head.state_dict()[name])
    assert eval_main(eval_argv(inputs, refs, centred, "--split", "val",
                               "--grounding_objective", "regions")) == 2
    assert "no regions localization head" in capsys.readouterr().err


def test_grounding_objective_needs_the_refcoco_task(trained, tmp_path):
    from vlp.train.args import build_parser, check

    inputs, refs, root = trained
    argv = train_argv(inputs, tmp_path / "run", "--grounding_objective", "centre")
    with pytest.raises(VLPError, match="--grounding_objective centre is for --tasks refcoco"):
        check(build_parser().parse_args(argv))
