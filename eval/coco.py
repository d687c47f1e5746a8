"""COCO-format datasets: an annotation JSON checked up front, a folder of images, and the subset to evaluate.

pycocotools trusts its input: a missing ``id`` or ``area`` is a KeyError deep inside COCOeval, a duplicate image id
silently overwrites another. Everything it needs is checked here, once, with messages that name the offending entries.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from ardet.images import LoadedImage, load_image

log = logging.getLogger(__name__)


def load_coco_json(path: str | os.PathLike) -> dict:
    """Read and validate a COCO instances JSON (images, annotations, categories); see :func:`validate_coco`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    return validate_coco(data, str(path))


def validate_coco(data: object, source: str = "annotations") -> dict:
    """Check a COCO instances dict and return a normalised copy.

    Errors (ValueError naming ``source`` and the first offending entries): missing sections, duplicate or non-integer
    ids, annotations pointing at unknown images or categories, boxes that are not 4 finite numbers with w, h >= 0.
    Filled in, with a logged warning: a missing annotation ``area`` (the box area; COCO's own is the mask area) and
    a missing ``iscrowd`` (0).
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: top level must be a JSON object, got {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise ValueError(f"{source}: not a COCO instances file: missing list(s) {', '.join(missing)}")
    images = [_entry(img, ("id", "file_name"), source, "images") for img in data["images"]]
    categories = [_entry(cat, ("id", "name"), source, "categories") for cat in data["categories"]]
    image_ids = _unique_int_ids(images, source, "images")
    category_ids = _unique_int_ids(categories, source, "categories")
    annotations = [_entry(ann, ("id", "image_id", "category_id", "bbox"), source, "annotations")
                   for ann in data["annotations"]]
    _unique_int_ids(annotations, source, "annotations")
    _check_refs(annotations, "image_id", image_ids, source)
    _check_refs(annotations, "category_id", category_ids, source)
    bad = [a["id"] for a in annotations if not valid_box(a["bbox"])]
    if bad:
        raise ValueError(f"{source}: {len(bad)} annotation(s) with a bbox that is not [x, y, w, h] of finite numbers "
                         f"with w, h >= 0, e.g. ids {bad[:5]}")
    no_area = [a for a in annotations if "area" not in a]
    for a in no_area:
        a["area"] = float(a["bbox"][2] * a["bbox"][3])
    if no_area:
        log.warning("%s: %d annotation(s) have no 'area'; using the box area w*h (COCO's own is the mask area)",
                    source, len(no_area))
    for a in annotations:
        a.setdefault("iscrowd", 0)
    return {**data, "images": images, "annotations": annotations, "categories": categories}


def valid_box(box: object) -> bool:
    """True for ``[x, y, w, h]`` of four finite numbers with ``w, h >= 0``."""
    return (isinstance(box, (list, tuple)) and len(box) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
            and box[2] >= 0 and box[3] >= 0)


def _entry(item: object, keys: tuple[str, ...], source: str, section: str) -> dict:
    if not isinstance(item, dict):
        raise ValueError(f"{source}: every entry of '{section}' must be an object, got {item!r:.80}")
    missing = [k for k in keys if k not in item]
    if missing:
        raise ValueError(f"{source}: an entry of '{section}' lacks {', '.join(missing)}: {item!r:.120}")
    return dict(item)


def _unique_int_ids(entries: list[dict], source: str, section: str) -> set[int]:
    ids = [e["id"] for e in entries]
    not_int = [i for i in ids if isinstance(i, bool) or not isinstance(i, int)]
    if not_int:
        raise ValueError(f"{source}: '{section}' ids must be integers, got e.g. {not_int[:5]}")
    seen, dups = set(), set()
    for i in ids:
        (dups if i in seen else seen).add(i)
    if dups:
        raise ValueError(f"{source}: duplicate '{section}' ids {sorted(dups)[:5]}")
    return seen


def _check_refs(annotations: list[dict], key: str, known: set[int], source: str) -> None:
    unknown = sorted({a[key] for a in annotations if a[key] not in known}, key=str)
    if unknown:
        raise ValueError(f"{source}: annotations refer to unknown {key} {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''}")


class CocoDataset:
    """A validated COCO annotation file, its image folder, and the ordered image ids selected for evaluation.

    The order is that of the JSON's ``images`` list (or of ``image_ids`` when given); ``limit`` keeps the first N.
    """

    def __init__(self, annotations: str | os.PathLike, images_dir: str | os.PathLike, *,
                 limit: int | None = None, image_ids: list[int] | None = None):
        self.annotations_path = Path(annotations)
        self.images_dir = Path(images_dir)
        self.gt = load_coco_json(self.annotations_path)
        self._images = {img["id"]: img for img in self.gt["images"]}
        if image_ids is not None:
            unknown = [i for i in image_ids if i not in self._images]
            if unknown:
                raise ValueError(f"image ids not in {self.annotations_path}: {unknown[:5]}"
                                 f"{' ...' if len(unknown) > 5 else ''}")
            if len(set(image_ids)) != len(image_ids):
                raise ValueError("the image id list has duplicates")
        ids = list(image_ids) if image_ids is not None else list(self._images)
        if limit is not None:
            if limit < 1:
                raise ValueError(f"limit must be >= 1, got {limit}")
            ids = ids[:limit]
        if not ids:
            raise ValueError(f"{self.annotations_path}: no images to evaluate")
        self.image_ids: tuple[int, ...] = tuple(ids)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.images_dir}")
        absent = [self._images[i]["file_name"] for i in ids if not self.image_path(i).is_file()]
        if absent:
            raise FileNotFoundError(f"{len(absent)} image file(s) listed in {self.annotations_path.name} are not in "
                                    f"{self.images_dir}: {absent[:3]}")

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def categories(self) -> list[dict]:
        return self.gt["categories"]

    def image_path(self, image_id: int) -> Path:
        return self.images_dir / self._images[image_id]["file_name"]

    def load(self, image_id: int) -> LoadedImage:
        """Decode one image with the shared loader; its size is checked against the JSON's width/height."""
        image = load_image(self.image_path(image_id), image_id=image_id)
        info = self._images[image_id]
        expected = (info.get("height"), info.get("width"))
        if None not in expected and image.size != expected:
            raise ValueError(f"{image.path}: decoded size {image.size} (h, w) differs from the annotation file's "
                             f"{expected}; boxes would not line up")
        return image


def read_image_ids(path: str | os.PathLike) -> list[int]:
    """Image ids from a file: a JSON list, or whitespace/comma-separated integers."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        ids = json.loads(text)
    except json.JSONDecodeError:
        ids = text.replace(",", " ").split()
    ids = ids if isinstance(ids, list) else [ids]
    try:
        return [int(i) for i in ids]
    except (TypeError, ValueError):
        raise ValueError(f"{path}: expected a list of integer image ids") from None
