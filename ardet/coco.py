"""COCO ground truth and bbox metrics: the one implementation behind every stage that scores detections
(detector validation, scale-predictor oracle labels, policy evaluation, ``ardet coco-eval``).

pycocotools trusts its input: a missing ``id`` or ``area`` is a KeyError deep inside COCOeval, a duplicate image id
silently overwrites another. It crashes on empty results (``loadRes([])``: IndexError) and on unknown image ids (a bare
assert), and silently miscounts others: detections of unknown category ids are dropped (0-based labels against COCO
ids give AP ~ 0 with no error) and NaN boxes count as true positives. :func:`validate_coco` and
:func:`check_detections` reject all of those, once, with messages that name the offending entries; empty results are
evaluated (AP 0 where there are objects) through an empty result set.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ardet.config import is_int, is_number, repeated
from ardet.files import read_json

log = logging.getLogger(__name__)


def load_coco_json(path: str | os.PathLike) -> dict:
    """Read and validate a COCO instances JSON (images, annotations, categories); see :func:`validate_coco`."""
    return validate_coco(read_json(path, "COCO annotation file"), str(path))


def read_categories(path: str | os.PathLike) -> list[dict]:
    """The ``categories`` list of a COCO JSON (a full annotation file or just ``{"categories": [...]}``)."""
    data = read_json(path, "categories file")
    categories = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(categories, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), int)
                                                   and isinstance(c.get("name"), str) for c in categories):
        raise ValueError(f"{path}: needs a 'categories' list of {{id: int, name: str}} entries")
    return categories


def validate_coco(data: object, source: str = "annotations") -> dict:
    """Check a COCO instances dict and return a normalised copy.

    Errors (ValueError naming ``source`` and the first offending entries): missing sections, duplicate or non-integer
    ids, annotations pointing at unknown images or categories, boxes that are not 4 finite numbers with w, h >= 0,
    areas that are not finite numbers >= 0, iscrowd other than 0 or 1.
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
    for entries, key, what in ((categories, "name", "category"), (images, "file_name", "image")):
        bad = [e["id"] for e in entries if not isinstance(e[key], str) or not e[key]]
        if bad:
            raise ValueError(f"{source}: each {what}'s {key} must be a non-empty string, e.g. {what} ids {bad[:5]}")
    annotations = [_entry(ann, ("id", "image_id", "category_id", "bbox"), source, "annotations")
                   for ann in data["annotations"]]
    _unique_int_ids(annotations, source, "annotations")
    _check_refs(annotations, "image_id", image_ids, source)
    _check_refs(annotations, "category_id", category_ids, source)
    bad = [a["id"] for a in annotations if not valid_box(a["bbox"])]
    if bad:
        raise ValueError(f"{source}: {len(bad)} annotation(s) with a bbox that is not [x, y, w, h] of finite numbers "
                         f"with w, h >= 0, e.g. ids {bad[:5]}")
    bad = [a["id"] for a in annotations if "area" in a and not (is_number(a["area"]) and math.isfinite(a["area"])
                                                                 and a["area"] >= 0)]
    bad += [a["id"] for a in annotations if a.get("iscrowd", 0) not in (0, 1) or isinstance(a.get("iscrowd"), float)]
    if bad:
        raise ValueError(f"{source}: {len(bad)} annotation(s) with an area that is not a finite number >= 0 or an "
                         f"iscrowd that is not 0 or 1, e.g. ids {bad[:5]}")
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
    return (isinstance(box, (list, tuple)) and len(box) == 4 and all(is_number(v) and math.isfinite(v) for v in box)
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
    not_int = [i for i in ids if not is_int(i)]
    if not_int:
        raise ValueError(f"{source}: '{section}' ids must be integers, got e.g. {not_int[:5]}")
    dups = repeated(ids)
    if dups:
        raise ValueError(f"{source}: duplicate '{section}' ids {sorted(dups)[:5]}")
    return set(ids)


def _check_refs(annotations: list[dict], key: str, known: set[int], source: str) -> None:
    unknown = sorted({a[key] for a in annotations if a[key] not in known}, key=str)
    if unknown:
        raise ValueError(f"{source}: annotations refer to unknown {key} {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''}")


# pycocotools' order of COCOeval.stats for bbox.
STAT_NAMES = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR1", "AR10", "AR100", "AR_S", "AR_M", "AR_L")
Backend = Literal["pycocotools", "faster-coco-eval"]
BACKENDS = ("pycocotools", "faster-coco-eval")


@dataclass(frozen=True)
class CocoMetrics:
    """The 12 COCOeval bbox stats (``-1`` where pycocotools reports -1: no ground truth in that area range) and the
    AP@[.5:.95] of each category (``None``: no ground-truth instance of it in the evaluated images)."""

    stats: tuple[float, ...]
    per_category: dict[int, float | None]
    category_names: dict[int, str]
    num_images: int
    num_detections: int
    backend: str
    stat_names: tuple[str, ...] = field(default=STAT_NAMES)

    def __getitem__(self, name: str) -> float:
        return self.stats[STAT_NAMES.index(name)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stats"] = list(self.stats)
        d["stat_names"] = list(self.stat_names)
        d["per_category"] = [{"id": k, "name": self.category_names[k], "ap": v} for k, v in self.per_category.items()]
        del d["category_names"]
        return d

    def format(self) -> str:
        """The 12 stats, then the AP of each category that has ground truth in the evaluated images."""
        lines = [f"{name:6s} {value:7.4f}" for name, value in zip(STAT_NAMES, self.stats)]
        lines += ["", f"{'id':>4s}  {'category':24s} AP"]
        lines += [f"{k:4d}  {self.category_names[k]:24.24s} {v:.4f}" for k, v in self.per_category.items()
                  if v is not None]
        absent = sum(v is None for v in self.per_category.values())
        if absent:
            lines.append(f"({absent} categories without ground truth in the evaluated images not shown)")
        return "\n".join(lines)


def check_detections(dets: object, gt: dict, image_ids: list[int] | None = None) -> list[dict]:
    """Validate COCO-format detections against a validated GT dict; return clean copies (pycocotools mutates them).

    Raises ValueError for: a non-list, entries without image_id/category_id/bbox/score, ids that are not integers,
    non-finite or negative-size boxes, non-finite scores, image or category ids the GT does not have. Detections for
    GT images outside ``image_ids`` are left out, as pycocotools' ``imgIds`` ignores them.
    """
    if not isinstance(dets, list):
        raise ValueError(f"detections must be a JSON list of objects, got {type(dets).__name__}")
    keys = ("image_id", "category_id", "bbox", "score")
    out = []
    for i, d in enumerate(dets):
        if not isinstance(d, dict) or any(k not in d for k in keys):
            raise ValueError(f"detection #{i} is not an object with {', '.join(keys)}: {d!r:.120}")
        out.append({k: d[k] for k in keys})
    bad_box = [i for i, d in enumerate(out) if not valid_box(d["bbox"])]
    if bad_box:
        raise ValueError(f"{len(bad_box)} detection(s) have a bbox that is not [x, y, w, h] of finite numbers with "
                         f"w, h >= 0 (NaN boxes would count as true positives in pycocotools), e.g. #{bad_box[:5]}")
    bad_score = [i for i, d in enumerate(out) if not (is_number(d["score"]) and math.isfinite(d["score"]))]
    if bad_score:
        raise ValueError(f"{len(bad_score)} detection(s) have a non-finite or non-numeric score, e.g. #{bad_score[:5]}")
    bad_id = [i for i, d in enumerate(out) if not (is_int(d["image_id"]) and is_int(d["category_id"]))]
    if bad_id:
        raise ValueError(f"{len(bad_id)} detection(s) have an image_id or category_id that is not an integer (COCO "
                         f"ids are), e.g. #{bad_id[:5]}")
    unknown = sorted({d["image_id"] for d in out} - {img["id"] for img in gt["images"]})
    if unknown:
        raise ValueError(f"detections for {len(unknown)} image id(s) not in the ground truth: {unknown[:5]}")
    if image_ids is not None:
        evaluated = set(image_ids)
        out = [d for d in out if d["image_id"] in evaluated]
    cat_ids = {c["id"] for c in gt["categories"]}
    unknown = sorted({d["category_id"] for d in out} - cat_ids, key=str)
    if unknown:
        hint = ""
        if all(isinstance(c, int) and 0 <= c < len(cat_ids) for c in {d["category_id"] for d in out}) \
                and cat_ids != set(range(len(cat_ids))):
            hint = ("; they look like contiguous 0-based class indices: map them to the dataset's category ids "
                    "(pycocotools would silently ignore them and report AP ~ 0)")
        raise ValueError(f"detections use {len(unknown)} category id(s) not in the ground truth: {unknown[:8]}{hint}")
    return out


def check_image_files(images: list[dict], image_dir: str | os.PathLike, source: str | os.PathLike) -> None:
    """Every image entry's ``file_name`` is a file in ``image_dir``: found before a run, not when it reaches one."""
    absent = [im["file_name"] for im in images if not (Path(image_dir) / im["file_name"]).is_file()]
    if absent:
        raise FileNotFoundError(f"{len(absent)} image file(s) listed in {source} are not in {image_dir}: "
                                f"{absent[:3]}")


def evaluate_bbox(gt: dict, dets: list[dict], image_ids: list[int] | None = None,
                  backend: Backend = "pycocotools") -> CocoMetrics:
    """COCOeval bbox of ``dets`` against the validated GT dict ``gt``, restricted to ``image_ids`` (default: all).

    Images in ``image_ids`` without any detection count as misses, exactly as in pycocotools.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown COCO eval backend {backend!r}; choose from {', '.join(BACKENDS)}")
    ids = sorted(image_ids) if image_ids is not None else sorted(img["id"] for img in gt["images"])
    unknown = sorted(set(ids) - {img["id"] for img in gt["images"]})
    if not ids or unknown:
        raise ValueError(f"image ids not in the ground truth: {unknown[:5]}" if unknown else "no images to evaluate")
    if len(set(ids)) < len(ids):  # pycocotools would score each once and the count would say otherwise
        raise ValueError(f"the image id list has duplicates: {repeated(ids)[:5]}")
    dets = check_detections(dets, gt, image_ids)
    with contextlib.redirect_stdout(io.StringIO()):  # both libraries print progress
        if backend == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        else:
            from faster_coco_eval import COCO, COCOeval_faster as COCOeval
        # pycocotools writes keys into the GT dicts (`ignore`, ...): it gets copies of them, one level deep (a
        # deepcopy of a 40 k-annotation file costs more than faster-coco-eval's whole evaluation)
        coco_gt = _coco(COCO, {**gt, **{k: [dict(item) for item in gt[k]] for k in ("images", "annotations",
                                                                                 "categories")}})
        coco_dt = coco_gt.loadRes(dets) if dets else _coco(COCO, {**_meta(gt), "annotations": []})
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = tuple(float(s) for s in ev.stats[:12])
    precision = ev.eval["precision"]  # [iou, recall, category, area, max_dets]; area 0 = all, max_dets -1 = 100
    per_category = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        per_category[int(cat_id)] = float(np.mean(p[p > -1])) if (p > -1).any() else None
    names = {c["id"]: c["name"] for c in gt["categories"]}
    return CocoMetrics(stats, per_category, names, len(ids), len(dets), backend)


def _coco(cls, dataset: dict):
    coco = cls()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _meta(gt: dict) -> dict:
    return {"info": gt.get("info", {}), "images": gt["images"], "categories": gt["categories"]}
