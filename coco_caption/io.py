"""Results and reference files: read, check, and pair them by image id.

Results: COCO results JSON, `[{"image_id": ..., "caption": "..."}]`, one per image.
References: COCO captions JSON (`{"annotations": [{"image_id", "caption"}]}`, as in
`captions_val2014.json`) or Karpathy JSON (`{"images": [{"split", "cocoid" | "imgid",
"sentences": [{"raw"}]}]}`, read for one `split`). Image ids may be ints or strings; they
are matched by their text, so 42 and "42" are the same image.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import Any, Union

from vlp.errors import VLPError

Source = Union[str, "os.PathLike[str]", list, dict]


@dataclass
class Pairs:
    """Captions to score, in results order: `ids[i]` (as in the results file),
    its candidate `candidates[i]` and its references `references[i]`."""
    ids: list
    candidates: list[str]
    references: list[list[str]]


def _name(source: Source, default: str) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else default


def _load(source: Source, name: str) -> Any:
    if not isinstance(source, (str, os.PathLike)):
        return source
    try:
        with open(source, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise VLPError(f"{name}: not valid JSON ({err.msg} at line {err.lineno} "
                       f"column {err.colno})") from None
    except UnicodeDecodeError as err:
        raise VLPError(f"{name}: not UTF-8 text (byte {err.start})") from None
    except FileNotFoundError:
        raise VLPError(f"{name}: no such file") from None


def _check_id(value: Any, name: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise VLPError(f"{name}: {where}: image id must be an int or a non-empty string, "
                       f"got {value!r}")
    return str(value)


def _check_caption(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str):
        raise VLPError(f"{name}: {where}: caption must be a string, got {value!r}")
    return value


def read_results(source: Source) -> tuple[list, list[str]]:
    """(image ids as given, captions) from COCO results JSON or an equivalent list."""
    name = _name(source, "<results>")
    data = _load(source, name)
    if not isinstance(data, list):
        raise VLPError(f"{name}: results must be a JSON list of "
                       f'{{"image_id", "caption"}}, got {type(data).__name__}')
    if not data:
        raise VLPError(f"{name}: no results (empty list)")
    ids, captions, seen = [], [], set()
    for i, entry in enumerate(data):
        where = f"entry {i}"
        if not isinstance(entry, dict) or "image_id" not in entry or "caption" not in entry:
            raise VLPError(f'{name}: {where}: expected {{"image_id", "caption"}}, '
                           f"got {json.dumps(entry, ensure_ascii=False)[:80]}")
        key = _check_id(entry["image_id"], name, where)
        if key in seen:
            raise VLPError(f"{name}: {where}: image id {entry['image_id']!r} appears twice "
                           "(one caption per image)")
        seen.add(key)
        ids.append(entry["image_id"])
        captions.append(_check_caption(entry["caption"], name, where))
    return ids, captions


def read_references(source: Source, split: str | None = None) -> dict[str, list[str]]:
    """{image id as text: [reference captions]} from COCO captions or Karpathy JSON."""
    name = _name(source, "<references>")
    data = _load(source, name)
    if isinstance(data, dict) and "annotations" in data:
        if split is not None:
            warnings.warn(f"{name} is COCO captions JSON, which has no splits; "
                          f"--split {split} ignored", stacklevel=2)
        return _coco_references(data["annotations"], name)
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        return _karpathy_references(data["images"], name, split)
    raise VLPError(f'{name}: not COCO captions JSON ({{"annotations": [...]}}) '
                   f'nor Karpathy JSON ({{"images": [{{"sentences": ...}}]}})')


def _coco_references(annotations: Any, name: str) -> dict[str, list[str]]:
    if not isinstance(annotations, list) or not annotations:
        raise VLPError(f'{name}: "annotations" must be a non-empty list')
    refs: dict[str, list[str]] = {}
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            raise VLPError(f'{name}: {where}: expected {{"image_id", "caption"}}, '
                           f"got {json.dumps(ann, ensure_ascii=False)[:80]}")
        key = _check_id(ann["image_id"], name, where)
        refs.setdefault(key, []).append(_check_caption(ann["caption"], name, where))
    return refs


def _karpathy_references(images: list, name: str, split: str | None) -> dict[str, list[str]]:
    if split is None:
        raise VLPError(f"{name} is Karpathy JSON: give the split to score (--split test)")
    refs: dict[str, list[str]] = {}
    splits = set()
    for i, image in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(image, dict) or "split" not in image:
            raise VLPError(f'{name}: {where}: expected an image with "split", "cocoid" or '
                           '"imgid" and "sentences"')
        splits.add(str(image["split"]))
        if image["split"] != split:
            continue
        image_id = image.get("cocoid", image.get("imgid"))
        if image_id is None:
            raise VLPError(f'{name}: {where}: no "cocoid" or "imgid"')
        key = _check_id(image_id, name, where)
        sentences = image.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise VLPError(f'{name}: {where}: "sentences" must be a non-empty list')
        for j, sentence in enumerate(sentences):
            if not isinstance(sentence, dict) or "raw" not in sentence:
                raise VLPError(f'{name}: {where}.sentences[{j}]: no "raw" caption')
            refs.setdefault(key, []).append(
                _check_caption(sentence["raw"], name, f"{where}.sentences[{j}]"))
    if not refs:
        raise VLPError(f"{name}: no images in split {split!r} (splits: "
                       f"{', '.join(sorted(splits)) or 'none'})")
    return refs


def pair(results: Source, references: Source, split: str | None = None) -> Pairs:
    """Read both files and keep the reference captions of the images in the results."""
    ids, candidates = read_results(results)
    refs = read_references(references, split)
    missing = [i for i in ids if str(i) not in refs]
    if missing:
        raise VLPError(f"{_name(results, '<results>')}: {len(missing)} result image id(s) "
                       f"not in {_name(references, '<references>')} (first: {missing[0]!r})")
    return Pairs(ids, candidates, [refs[str(i)] for i in ids])
