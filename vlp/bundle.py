"""A bundle: what captioning (and answering about) any image file needs, in one directory.

`bundle.json` names the detector directory, the caption model checkpoint and (when there
is one) the VQA model, with the extraction and decoding settings they were trained with;
paths are relative to the bundle directory. The main job writes one in its output
directory, so `vlp caption IMAGE --bundle runs/quickstart` works after `make quickstart`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vlp.errors import VLPError

BUNDLE_FILE = "bundle.json"


@dataclass
class Bundle:
    root: Path
    detector: str
    caption_model: str
    regions: int
    extract: dict = field(default_factory=dict)   # conf, nms_iou, min_boxes, max_boxes
    max_length: int = 20
    beam_size: int = 3
    # `vlp decode`'s --forbid_duplicate_ngrams, --ngram_size, --forbid_ignore_word ("|"
    # between words); a bundle without them decodes as VLP does by default.
    forbid_duplicate_ngrams: bool = False
    ngram_size: int = 3
    forbid_ignore_word: str | None = None
    vqa_model: str | None = None
    grounding_model: str | None = None

    def path(self, name: str) -> Path:
        return self.root / name


def write_bundle(root: Path, detector: Path, caption_model: Path, regions: int, extract: dict,
                 vqa_model: Path | None = None, grounding_model: Path | None = None,
                 **decoding) -> Path:
    root = Path(root)

    def rel(p):
        return None if p is None else os.path.relpath(Path(p).resolve(), root.resolve())

    data = {"detector": rel(detector), "caption_model": rel(caption_model), "regions": regions,
            "extract": extract, "vqa_model": rel(vqa_model),
            "grounding_model": rel(grounding_model), **decoding}
    path = root / BUNDLE_FILE
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def load_bundle(root: str | Path) -> Bundle:
    root = Path(root)
    path = root / BUNDLE_FILE
    if not path.is_file():
        raise VLPError(f"--bundle {root}: no {BUNDLE_FILE} (a bundle is the output directory "
                       "of `vlp quickstart`)")
    try:
        bundle = Bundle(root=root, **json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise VLPError(f"{path}: not a bundle description ({err})") from None
    for name in ("detector", "caption_model"):
        if not bundle.path(getattr(bundle, name)).exists():
            raise VLPError(f"{path}: {name} {getattr(bundle, name)} is missing")
    return bundle


class _Regions:
    """The bundle's detector: image files in, region records out."""

    def __init__(self, bundle: Bundle, device: str):
        from feature_extraction.detector import load_detector
        from feature_extraction.regions import ExtractSettings, RegionExtractor

        detector, det_config = load_detector(bundle.path(bundle.detector))
        self.class_names = det_config.class_names
        self.extractor = RegionExtractor(detector.to(device), ExtractSettings(**bundle.extract))
        self.bundle, self.device = bundle, device

    def regions(self, image_path: str | Path):
        """The image file's region record (VLPError when it cannot be read)."""
        return self.regions_of(self.read(image_path))

    @staticmethod
    def read(image_path: str | Path) -> np.ndarray:
        from feature_extraction.images import BadImage, decode_rgb

        try:
            return decode_rgb(image_path)
        except BadImage as err:
            raise VLPError(f"{image_path}: {err}") from None

    def regions_of(self, pixels: np.ndarray):
        """The region record of a uint8 [H, W, 3] image (from decode_rgb or
        decode_rgb_bytes: the server hands over pixels, never a path)."""
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float() / 255.0
        return self.extractor([tensor])[0]

    def inputs(self, record):
        """Model inputs [1, n, D], [1, n, locations], [1] of the record's first regions."""
        import torch

        from vlp.data.region_text import region_inputs

        feats, locs = region_inputs(record, self.bundle.regions,
                                    box_frequencies=self.model.config.region_box_octaves)
        return (torch.from_numpy(feats)[None].to(self.device),
                torch.from_numpy(locs)[None].to(self.device),
                torch.tensor([len(feats)], device=self.device))

    def load_model(self, name: str, what: str) -> Path:
        """The bundle's model `name` ("vqa_model", "grounding_model") and its tokenizer
        into self.model and self.tokenizer; its directory."""
        from vlp.data.tokens import load_tokenizer
        from vlp.model import UnifiedVLP

        if not getattr(self.bundle, name):
            raise VLPError(f"--bundle {self.bundle.root}: the bundle has no {what} model")
        model_dir = self.bundle.path(getattr(self.bundle, name))
        self.model = UnifiedVLP.from_pretrained(model_dir, map_location=self.device).eval()
        self.tokenizer = load_tokenizer(model_dir)
        return model_dir

    def text_ids(self, text: str):
        """[1, T] the tokens of `text` (cut to the bundle's max_length) and [SEP]."""
        import torch

        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:self.bundle.max_length]
        return torch.tensor([ids + [self.model.config.sep_token_id]], device=self.device)

    def encode(self, text: str, feats, locs, n):
        """The bidirectional encoder's output for `text` and the image's regions, as VQA
        reads it."""
        import torch

        ids = self.text_ids(text)
        with torch.no_grad():
            return self.model(ids, torch.tensor([ids.shape[1]], device=self.device), feats, locs,
                              n, torch.zeros(1, dtype=torch.bool, device=self.device))

    def describe(self, record, count: int) -> list[dict]:
        probs = np.asarray(record.cls_probs, dtype=np.float32)
        out = []
        for i in range(count):
            best = int(probs[i, 1:].argmax()) + 1 if probs.shape[1] > 1 else 0
            label = self.class_names[best] if best < len(self.class_names) else str(best)
            out.append({"box": [round(float(v), 1) for v in record.boxes[i]], "label": label,
                        "score": round(float(record.scores[i]), 3)})
        return out


class ImageCaptioner(_Regions):
    """Detector + caption model: image files in, captions and the regions used out."""

    def __init__(self, bundle: Bundle, device: str = "cpu", beam_size: int | None = None):
        from vlp.data.tokens import load_tokenizer
        from vlp.decode import CaptionGenerator, SearchSettings
        from vlp.decode.run import ignored_tokens
        from vlp.model import UnifiedVLP

        super().__init__(bundle, device)
        model_dir = bundle.path(bundle.caption_model)
        self.model = UnifiedVLP.from_pretrained(model_dir, map_location=device).eval()
        self.tokenizer = load_tokenizer(model_dir)
        ignore = ignored_tokens(self.tokenizer, bundle.forbid_ignore_word,
                                f"{bundle.path(BUNDLE_FILE)}: forbid_ignore_word")
        settings = SearchSettings(eos_id=self.model.config.sep_token_id,
                                  max_length=bundle.max_length,
                                  beam_size=beam_size or bundle.beam_size,
                                  forbid_duplicate_ngrams=bundle.forbid_duplicate_ngrams,
                                  ngram_size=bundle.ngram_size,
                                  forbid_ignore=ignore)
        self.generator = CaptionGenerator(self.model, settings)

    def caption(self, image_path: str | Path, n_best: int = 1) -> dict:
        return {"image": str(image_path), **self.caption_pixels(self.read(image_path), n_best)}

    def caption_pixels(self, pixels: np.ndarray, n_best: int = 1) -> dict:
        """The best caption and its score, the `n_best` best (n_best <= the beam size)
        with theirs, and the regions used."""
        from vlp.decode.run import caption_text

        record = self.regions_of(pixels)
        feats, locs, n = self.inputs(record)
        hyps = self.generator.generate_n_best(feats, locs, n, n_best)[0]
        best = [{"caption": caption_text(self.tokenizer, h.tokens), "score": h.score} for h in hyps]
        return {**best[0], "n_best": best, "regions": self.describe(record, int(n[0]))}


class ImageAnswerer(_Regions):
    """Detector + VQA model: an image file and a question in, the answer out."""

    def __init__(self, bundle: Bundle, device: str = "cpu"):
        from vlp.eval.vqa_answers import AnswerVocab

        if not bundle.vqa_model:
            raise VLPError(f"--bundle {bundle.root}: the bundle has no VQA model")
        super().__init__(bundle, device)
        model_dir = self.load_model("vqa_model", "VQA")
        self.vocab = AnswerVocab.load(model_dir / "answer_vocab.json")

    def ask(self, image_path: str | Path, question: str, top: int = 3) -> dict:
        return {"image": str(image_path), **self.ask_pixels(self.read(image_path), question, top)}

    def ask_pixels(self, pixels: np.ndarray, question: str, top: int = 3) -> dict:
        """The best answer, the `top` best with their probabilities, the regions used."""
        import torch

        from vlp.eval.vqa_predict import best_answers

        record = self.regions_of(pixels)
        feats, locs, n = self.inputs(record)
        hidden = self.encode(question, feats, locs, n)
        with torch.no_grad():
            probs = self.model.vqa_logits(hidden, feats.shape[1]).sigmoid()[0]
        values, indices = best_answers(probs, self.vocab, top)
        return {"question": question, "answer": self.vocab[int(indices[0])],
                "candidates": [{"answer": self.vocab[int(i)], "score": round(float(p), 3)}
                               for p, i in zip(values, indices)],
                "regions": self.describe(record, int(n[0]))}


class ImageLocator(_Regions):
    """Detector + localization model: an image file and a referring expression in, the
    region it names (box, probability over the image's regions) out."""

    def __init__(self, bundle: Bundle, device: str = "cpu"):
        if not bundle.grounding_model:
            raise VLPError(f"--bundle {bundle.root}: the bundle has no localization model")
        super().__init__(bundle, device)
        from vlp.model.grounding import choose_objective

        model_dir = self.load_model("grounding_model", "localization")
        if not (self.model.config.grounding or self.model.config.grounding_centre):
            raise VLPError(f"{model_dir}: no localization head (train one with --tasks refcoco)")
        self.objective = choose_objective(self.model)

    def locate(self, image_path: str | Path, expression: str, top: int = 3) -> dict:
        return {"image": str(image_path),
                **self.locate_pixels(self.read(image_path), expression, top)}

    def locate_pixels(self, pixels: np.ndarray, expression: str, top: int = 3) -> dict:
        """The best region's box (x1, y1, x2, y2 pixels) and probability, the `top` best
        with theirs, and the regions used."""
        record = self.regions_of(pixels)
        feats, locs, n = self.inputs(record)
        if int(n[0]) == 0:
            raise VLPError("the detector found no region in the image: nothing to point at")
        import torch

        from vlp.data.grounding import centres
        from vlp.model.grounding import region_scores

        ids = self.text_ids(expression)
        region_centres = torch.from_numpy(centres(record, self.bundle.regions)[0])[None]
        with torch.no_grad():
            scores, _ = region_scores(self.model, self.objective, ids,
                                      torch.tensor([ids.shape[1]], device=self.device), feats,
                                      locs, n, region_centres.to(self.device))
        probs = scores.softmax(-1)[0]
        values, indices = probs.topk(min(top, int(n[0])))
        regions = self.describe(record, int(n[0]))
        found = [{**regions[int(i)], "probability": round(float(p), 3)}
                 for p, i in zip(values, indices)]
        return {"expression": expression, "box": found[0]["box"],
                "probability": found[0]["probability"], "candidates": found, "regions": regions}


def bundle_summary(bundle: Bundle) -> dict:
    return {k: v for k, v in asdict(bundle).items() if k != "root"}
