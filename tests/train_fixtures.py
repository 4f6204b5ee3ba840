"""Small inputs for trainer tests: a tiny BERT directory, Karpathy JSON, a region store."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ["a", "red", "blue", "green", "circle", "square", "triangle", "left", "right", "of",
         "the", "small", "big", "two", "three", "and", "above", "below"]
FEATURE_DIM, CLASSES = 12, 4


def tiny_bert(path: Path, dropout: float = 0.0) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=64,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    BertModel(cfg).save_pretrained(path)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return path


def captions_json(path: Path, images: int, per_image: int = 2, words: int = 6,
                  seed: int = 0) -> Path:
    """Karpathy-style JSON; every caption has `words` words (equal prediction counts)."""
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(images):
        sents = [{"raw": " ".join(rng.choice(WORDS[1:], words))} for _ in range(per_image)]
        entries.append({"split": "train", "filename": f"img_{i:04d}.jpg", "filepath": "x",
                        "imgid": i, "cocoid": i, "sentences": sents})
    path.write_text(json.dumps({"images": entries}))
    return path


def region_store(path: Path, images: int, seed: int = 0, regions: int = 5) -> Path:
    from vlp.data.features import RegionRecord, create_store

    rng = np.random.default_rng(seed)
    with create_store(path) as out:
        for i in range(images):
            n = regions - i % 2
            x1, y1 = rng.uniform(0, 40, n), rng.uniform(0, 40, n)
            boxes = np.stack([x1, y1, x1 + rng.uniform(5, 20, n), y1 + rng.uniform(5, 20, n)], 1)
            out.put(f"img_{i:04d}", RegionRecord(
                boxes=boxes, features=rng.standard_normal((n, FEATURE_DIM)),
                cls_probs=rng.dirichlet(np.ones(CLASSES), n), scores=rng.random(n),
                image_w=64, image_h=64))
    return path


def make_inputs(root: Path, images: int = 16, dropout: float = 0.0) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    return {"bert": tiny_bert(root / "bert", dropout),
            "src": captions_json(root / "dataset_toy.json", images),
            "features": region_store(root / "regions.lmdb", images), "dropout": dropout}


def train_argv(inputs: dict, out: Path, *extra: str) -> list[str]:
    return ["--output_dir", str(out), "--bert_model", str(inputs["bert"]),
            "--src_file", str(inputs["src"]), "--features", str(inputs["features"]),
            "--do_train", "--split", "train", "--new_segment_ids", "--len_vis_input", "8",
            "--max_len_b", "10", "--learning_rate", "1e-3", "--train_batch_size", "8",
            "--num_workers", "0", "--no_progress", "--s2s_prob", "0.5", "--bi_prob", "0.5",
            # The tiny BERT's own rate (VLP's --drop_prob default, 0.1, would override it).
            "--drop_prob", str(inputs.get("dropout", 0.0)), *extra]


PYTHON = sys.executable


def vqa_files(root: Path, store_path: Path, images: int) -> dict:
    """Official-format VQA JSON for the fixture images: 'is the first region bright' is
    answered by the sign of that region's first feature, so it can be learned."""
    from vlp.data.features import open_store

    store = open_store(store_path)
    questions, annotations = [], []
    for i in range(images):
        bright = float(store[f"img_{i:04d}"].features[0, 0]) > 0
        for k, (text, answer) in enumerate([("is the red circle big", "yes" if bright else "no"),
                                           ("what color is the square", "red")]):
            qid = i * 10 + k
            questions.append({"image_id": i, "question": text, "question_id": qid})
            answers = [{"answer": answer, "answer_confidence": "yes", "answer_id": j + 1}
                       for j in range(10)]
            annotations.append({"question_id": qid, "image_id": i, "question_type": text[:7],
                                "answer_type": "yes/no" if k == 0 else "other",
                                "multiple_choice_answer": answer, "answers": answers})
    store.close()
    header = {"info": {}, "license": {}, "data_subtype": "train", "task_type": "Open-Ended",
              "data_type": "toy"}
    q = root / "questions.json"
    a = root / "annotations.json"
    q.write_text(json.dumps({**header, "questions": questions}))
    a.write_text(json.dumps({**header, "annotations": annotations}))
    return {"questions": q, "annotations": a}


def vqa_argv(inputs: dict, files: dict, out: Path, *extra: str) -> list[str]:
    # No question token masked (VLP's defaults would mask up to 3) unless `extra` says so.
    argv = train_argv(inputs, out, "--tasks", "vqa2", "--vqa_annotations",
                      str(files["annotations"]), "--image_map", str(inputs["src"]),
                      "--s2s_prob", "0", "--bi_prob", "1", "--max_pred", "0", *extra)
    argv[argv.index("--src_file") + 1] = str(files["questions"])
    return argv


def eval_vqa_argv(inputs: dict, files: dict, checkpoint: Path) -> list[str]:
    """`vlp eval-vqa` on the training questions of vqa_files, scored (split "train")."""
    return ["--model_recover_path", str(checkpoint), "--src_file", str(files["questions"]),
            "--image_map", str(inputs["src"]), "--features", str(inputs["features"]),
            "--len_vis_input", "8", "--no_progress", "--num_workers", "0", "--split", "train",
            "--vqa_annotations", str(files["annotations"])]
