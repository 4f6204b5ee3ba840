"""Caption annotations: Karpathy-style JSON (COCO, Flickr30k, ToyWorld) and VLP's CC JSON.

Both are `{"images": [{"split", "filename", "sentences": [{"raw"}...]}...]}`; one example
per sentence, as VLP trained. The region store key of an image is its file name's stem
(`COCO_train2014_000000000009.jpg` -> `COCO_train2014_000000000009`), VLP's convention.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vlp.errors import VLPError

# VLP's default training splits.
TRAIN_SPLITS = ("train", "restval")


@dataclass(frozen=True)
class Caption:
    image_key: str      # region store key: the file name's stem
    image_id: int | str  # cocoid when present, else imgid, else the key
    text: str


def image_key(filename: str) -> str:
    return Path(filename).stem


def _image_id(entry: dict):
    for name in ("cocoid", "imgid", "id"):
        if name in entry:
            return entry[name]
    return image_key(entry["filename"])


def read_json(path: str | Path, what: str) -> object:
    path = Path(path)
    if not path.is_file():
        raise VLPError(f"{path}: no such {what} file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise VLPError(f"{path}: not valid JSON ({err})") from None


def read_valid_jpgs(path: str | Path) -> set[str]:
    """VLP's --file_valid_jpgs: the image file names (or stems) to keep, as a JSON object
    whose keys are the names (what VLP wrote, `{"COCO_..._000000000009.jpg": ...}`) or a
    JSON list of them."""
    names = read_json(path, "--file_valid_jpgs")
    if isinstance(names, dict):
        names = list(names)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise VLPError(f"{path}: --file_valid_jpgs must be a JSON object keyed by image file "
                       "name (VLP's) or a JSON list of image file names")
    return {image_key(n) for n in names}


@dataclass(frozen=True)
class ImageEntry:
    image_key: str         # region store key
    image_id: int | str    # the id results files use


def results_image_id(entry: dict, dataset: str):
    """The id VLP wrote in results files: COCO's number from the file name
    (COCO_val2014_000000391895.jpg -> 391895), CC's imgid, Flickr30k's file number;
    otherwise cocoid / imgid as stored."""
    stem = image_key(entry["filename"])
    if dataset == "coco" and stem.count("_") >= 2 and stem.rsplit("_", 1)[1].isdigit():
        return int(stem.rsplit("_", 1)[1])
    if dataset == "flickr30k" and stem.isdigit():
        return int(stem)
    if dataset == "cc" and "imgid" in entry:
        return entry["imgid"]
    return _image_id(entry)


def karpathy_images(paths, what: str, needs: str = "split/filename"):
    """(path, index, entry, store key) of every image in Karpathy-style JSON files; a
    malformed entry is an error naming the file, the index and `needs`."""
    for path in paths:
        data = read_json(path, what)
        images = data.get("images") if isinstance(data, dict) else None
        if not isinstance(images, list):
            raise VLPError(f"{path}: expected Karpathy-style JSON with an 'images' list")
        for n, entry in enumerate(images):
            try:
                yield path, n, entry, image_key(entry["filename"])
            except (KeyError, TypeError, AttributeError) as err:
                raise VLPError(f"{path}: images[{n}] lacks {needs} "
                               f"({type(err).__name__}: {err})") from None


def _entry_error(path, n, needs: str, err: Exception) -> VLPError:
    return VLPError(f"{path}: images[{n}] lacks {needs} ({type(err).__name__}: {err})")


def read_images(paths, split: str, dataset: str = "coco",
                valid: set[str] | None = None) -> list[ImageEntry]:
    """The images of one split (each once), in file order."""
    out, seen = [], set()
    for path, n, entry, key in karpathy_images(paths, "caption annotation"):
        try:
            if entry["split"] != split or key in seen or (valid is not None and key not in valid):
                continue
        except (KeyError, TypeError) as err:
            raise _entry_error(path, n, "split/filename", err) from None
        seen.add(key)
        out.append(ImageEntry(key, results_image_id(entry, dataset)))
    if not out:
        raise VLPError(f"no images in split {split!r} of {', '.join(map(str, paths))}")
    return out


def read_captions(paths, splits=TRAIN_SPLITS, valid: set[str] | None = None) -> list[Caption]:
    """Every sentence of the images in `splits` from Karpathy/CC JSON files, in file order.
    `valid` (stems) keeps only those images."""
    wanted = set(splits)
    captions: list[Caption] = []
    needs = "split/filename/sentences[].raw"
    for path, n, entry, key in karpathy_images(paths, "caption annotation", needs):
        try:
            if entry["split"] not in wanted or (valid is not None and key not in valid):
                continue
            image_id = _image_id(entry)
            captions += [Caption(key, image_id, s["raw"].strip()) for s in entry["sentences"]]
        except (KeyError, TypeError, AttributeError) as err:
            raise _entry_error(path, n, needs, err) from None
    if not captions:
        raise VLPError(f"no captions in splits {sorted(wanted)} of {', '.join(map(str, paths))}")
    return captions


def image_key_map(paths) -> dict[str, str]:
    """{image id as text: region store key} from Karpathy-style JSON (cocoid, and imgid
    where there is no cocoid), for annotations that name images by id (VQA v2)."""
    return {str(_image_id(entry)): key
            for _, _, entry, key in karpathy_images(paths, "image map", "filename")}
