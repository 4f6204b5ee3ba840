"""A tiny data root, code root and checkpoint root laid out exactly as VLP's README expects
them, so its command lines run with only the paths changed (and `--bert_model`).

    CODE_ROOT/detectron_weights/fc7_{w,b}.pkl            the BUTD detector's fc7 (pickles)
    CODE_ROOT/pythia/data/imdb/vqa/imdb_{train,val}2014.npy  Pythia imdb files
    CODE_ROOT/pythia/data/vocabs/answers_vqa.txt          Pythia's answer list
    CODE_ROOT/pythia/data/v2_mscoco_val2014_annotations.json  official annotations
    DATA_ROOT/COCO/annotations/dataset_coco.json, coco_valid_jpgs.json (a JSON object)
    DATA_ROOT/COCO/region_feat_gvd_wo_bgd/feat_cls_1000/coco_detection_vg_100dets_gvd_checkpoint_trainval_{feat,cls}XYZ.h5
    DATA_ROOT/COCO/region_feat_gvd_wo_bgd/coco_detection_vg_thresh0.2_feat_gvd_checkpoint_trainvaltest.h5
    DATA_ROOT/CC/annotations/dataset_cc.json, cc_valid_jpgs.json
    DATA_ROOT/CC/region_feat_gvd_wo_bgd/feat_cls_1000_float16/cc_..._{feat,cls}XYZ.h5 (float16)
    DATA_ROOT/CC/region_feat_gvd_wo_bgd/bbox/cc_detection_vg_thresh0.2_feat_gvd_checkpoint_trainval.h5
    DATA_ROOT/flickr30k/annotations/dataset_flickr30k.json, flickr30k_valid_jpgs.json
    DATA_ROOT/flickr30k/region_feat_gvd_wo_bgd/trainval/<id>.npy, <id>_cls_prob.npy, and the box file
    CHECKPOINT_ROOT/bert_save/base_model_pretrained/model_153999_cpu.bin  UniLM's BERT-layout .bin
    BERT/                                                 the --bert_model directory

Regions: 100 per image (VLP's --len_vis_input), 16-d features, 5 classes.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np

REGIONS, D, C = 100, 16, 5
WORDS = ["a", "red", "blue", "green", "circle", "square", "triangle", "left", "right", "of",
         "the", "small", "big", "two", "three", "and", "above", "below", "yes", "no",
         "what", "color", "is", "there", "how", "many"]
COCO_SPLITS = ["train"] * 6 + ["restval"] * 2 + ["val"] * 2 + ["test"] * 2
COCO_BBOX = "coco_detection_vg_thresh0.2_feat_gvd_checkpoint_trainvaltest.h5"
COCO_PREFIX = "feat_cls_1000/coco_detection_vg_100dets_gvd_checkpoint_trainval"
CC_BBOX = "bbox/cc_detection_vg_thresh0.2_feat_gvd_checkpoint_trainval.h5"
CC_PREFIX = "feat_cls_1000_float16/cc_detection_vg_100dets_gvd_checkpoint_trainval"
FLICKR_BBOX = "flickr30k_detection_vg_thresh0.2_feat_gvd_checkpoint_trainvaltest.h5"


def regions(rng, dtype=np.float32):
    x1, y1 = rng.uniform(0, 300, REGIONS), rng.uniform(0, 200, REGIONS)
    boxes6 = np.stack([x1, y1, x1 + rng.uniform(5, 300, REGIONS),
                       y1 + rng.uniform(5, 200, REGIONS), rng.integers(1, C, REGIONS),
                       rng.random(REGIONS)], 1).astype(np.float32)
    return (rng.standard_normal((REGIONS, D)).astype(dtype),
            rng.dirichlet(np.ones(C), REGIONS).astype(dtype), boxes6)


def sentence(rng, words: int = 6) -> str:
    return " ".join(rng.choice(WORDS[1:18], words))


def karpathy(path: Path, names: list[str], splits: list[str], rng, per_image: int = 2,
             coco_ids: bool = True) -> Path:
    images = []
    for i, (name, split) in enumerate(zip(names, splits)):
        entry = {"filepath": name.split("_")[1] if coco_ids else "trainval", "filename": name,
                 "imgid": i, "split": split,
                 "sentences": [{"raw": sentence(rng), "imgid": i} for _ in range(per_image)]}
        if coco_ids:
            entry["cocoid"] = int(Path(name).stem.split("_")[-1])
        images.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dataset": path.stem, "images": images}))
    return path


def valid_jpgs(path: Path, names: list[str]) -> Path:
    """VLP's file: a JSON object whose keys are the image file names."""
    path.write_text(json.dumps({n: n for n in names}))
    return path


def sharded_release(root: Path, prefix: str, bbox: str, keys: list[str], rng, dtype):
    base = root / prefix
    base.parent.mkdir(parents=True, exist_ok=True)
    (root / bbox).parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / bbox, "w") as boxes:
        for key in keys:
            feat, cls, boxes6 = regions(rng, dtype)
            with h5py.File(f"{base}_feat{key[-3:]}.h5", "a") as f:
                f[key] = feat
            with h5py.File(f"{base}_cls{key[-3:]}.h5", "a") as f:
                f[key] = cls
            boxes[key] = boxes6


def imdb(path: Path, keys: list[str], rng) -> list[dict]:
    """Pythia's imdb: a header, then one dict per question naming its image."""
    header = {"create_time": "2018", "dataset_name": "vqa", "version": 1, "has_answer": True}
    entries = []
    for i, key in enumerate(keys):
        image_id = int(key.split("_")[-1])
        for k, (question, answer) in enumerate([("what color is the circle", ["red", "blue"]),
                                                ("how many squares", ["two", "2"])]):
            answers = [answer[j % 3 == 2] for j in range(10)]
            entries.append({"image_name": key, "image_id": image_id,
                            "question_id": image_id * 1000 + k,
                            "feature_path": f"{key}.npy", "question_str": question,
                            "question_tokens": question.split(), "answers": answers,
                            "valid_answers": answers})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.array([header] + entries, dtype=object))
    return entries


def annotations(path: Path, entries: list[dict]) -> Path:
    anns = [{"question_id": e["question_id"], "image_id": e["image_id"],
             "question_type": " ".join(e["question_tokens"][:2]),
             "answer_type": "number" if e["question_str"].startswith("how") else "other",
             "multiple_choice_answer": max(set(e["answers"]), key=e["answers"].count),
             "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                         for j, a in enumerate(e["answers"])]} for e in entries]
    path.write_text(json.dumps({"info": {}, "license": {}, "data_subtype": "val2014",
                                "annotations": anns}))
    return path


def bert(path: Path, seed: int = 0):
    """A tiny cased BERT directory (4 heads, which hidden/64 would not guess) and the
    BertForPreTraining state dict of another draw (UniLM's .bin layout)."""
    import torch
    from transformers import BertConfig, BertForPreTraining, BertModel

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=128,
                     layer_norm_eps=1e-12)
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(path)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(seed + 1)
    return {k: v.clone() for k, v in BertForPreTraining(cfg).state_dict().items()}


def write(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    code, data, ckpt = root / "code", root / "data", root / "checkpoints"
    paths = {"code": code, "data": data, "ckpt": ckpt, "bert": root / "bert"}

    unilm = bert(paths["bert"])
    paths["unilm"] = ckpt / "bert_save" / "base_model_pretrained" / "model_153999_cpu.bin"
    paths["unilm"].parent.mkdir(parents=True)
    import torch

    torch.save(unilm, paths["unilm"])

    fc7 = code / "detectron_weights"
    fc7.mkdir(parents=True)
    paths["fc7_w"] = rng.standard_normal((D, D)).astype(np.float32) * 0.1
    paths["fc7_b"] = rng.standard_normal(D).astype(np.float32) * 0.1
    for name, value in (("fc7_w.pkl", paths["fc7_w"]), ("fc7_b.pkl", paths["fc7_b"])):
        with open(fc7 / name, "wb") as f:
            pickle.dump(value, f, protocol=2)

    coco_names = [f"COCO_{'val' if s in ('val', 'test') else 'train'}2014_{100 + i:012d}.jpg"
                  for i, s in enumerate(COCO_SPLITS)]
    coco_keys = [Path(n).stem for n in coco_names]
    ann = data / "COCO" / "annotations"
    paths["coco_json"] = karpathy(ann / "dataset_coco.json", coco_names, COCO_SPLITS, rng)
    # One training image is left out of the valid list: it has no features.
    paths["coco_valid"] = valid_jpgs(ann / "coco_valid_jpgs.json", coco_names[1:])
    paths["coco_root"] = data / "COCO" / "region_feat_gvd_wo_bgd"
    sharded_release(paths["coco_root"], COCO_PREFIX, COCO_BBOX, coco_keys[1:], rng, np.float32)

    cc_names = [f"cc_train_{i:07d}.jpg" for i in range(10)]
    cc = data / "CC" / "annotations"
    paths["cc_json"] = karpathy(cc / "dataset_cc.json", cc_names, ["train"] * 10, rng,
                                per_image=1, coco_ids=False)
    paths["cc_valid"] = valid_jpgs(cc / "cc_valid_jpgs.json", cc_names)
    paths["cc_root"] = data / "CC" / "region_feat_gvd_wo_bgd"
    sharded_release(paths["cc_root"], CC_PREFIX, CC_BBOX, [Path(n).stem for n in cc_names],
                    rng, np.float16)

    fl_names = [f"{1000092795 + i}.jpg" for i in range(6)]
    fl = data / "flickr30k" / "annotations"
    paths["flickr_json"] = karpathy(fl / "dataset_flickr30k.json", fl_names,
                                    ["train"] * 4 + ["val", "test"], rng, coco_ids=False)
    paths["flickr_valid"] = valid_jpgs(fl / "flickr30k_valid_jpgs.json", fl_names)
    paths["flickr_root"] = data / "flickr30k" / "region_feat_gvd_wo_bgd"
    (paths["flickr_root"] / "trainval").mkdir(parents=True)
    with h5py.File(paths["flickr_root"] / FLICKR_BBOX, "w") as boxes:
        for name in fl_names:
            feat, cls, boxes6 = regions(rng)
            np.save(paths["flickr_root"] / "trainval" / f"{Path(name).stem}.npy", feat)
            np.save(paths["flickr_root"] / "trainval" / f"{Path(name).stem}_cls_prob.npy", cls)
            boxes[Path(name).stem] = boxes6

    vqa = code / "pythia" / "data"
    # Pythia's vocab.tar.gz, which VLP's README unpacks there: <unk> first.
    (vqa / "vocabs").mkdir(parents=True)
    (vqa / "vocabs" / "answers_vqa.txt").write_text("<unk>\nred\nblue\n2\nyes\nno\n")
    imdb(vqa / "imdb" / "vqa" / "imdb_train2014.npy", coco_keys[1:8], rng)
    val = imdb(vqa / "imdb" / "vqa" / "imdb_val2014.npy", coco_keys[8:], rng)
    paths["vqa_ref"] = annotations(vqa / "v2_mscoco_val2014_annotations.json", val)
    return paths
