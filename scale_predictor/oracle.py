"""AdaScale-style oracle labels: run a frozen detector on each training image at K candidate sizes, cache the
per-image detection quality and GFLOPs to JSONL, label each image by argmin over sizes of (1 - quality + lambda * GFLOPs)
or by a soft target over sizes.

The detector enters only through ``run(image, (H, W)) -> (quality, gflops)``: the caller composes resampler, detector
and metric (see :func:`image_quality` for the metric used by ``ardet train-scale``), so this module knows no detector.
The cache is append-only JSONL, one record per (image, size), fsynced per record: a killed run resumes where it
stopped, and relabelling for another lambda (the knob sweep) never reruns the detector.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Sequence

import numpy as np

from ardet.coco import evaluate_bbox
from ardet.files import JsonlWriter, read_jsonl
from scale_predictor.model import target_size

RunFn = Callable[[Any, tuple[int, int]], tuple[float, float]]  # (image as ``load()`` returns it, (H, W))


def oracle_costs(quality: np.ndarray, gflops: np.ndarray, lam: float | np.ndarray) -> np.ndarray:
    """What the oracle minimises over candidate sizes: (1 - quality) + lambda * GFLOPs. Candidates in ascending size
    order and ``argmin`` give the smaller size on ties."""
    return (1.0 - quality) + lam * gflops


@dataclass(frozen=True)
class OracleTable:
    """Per image (rows) and candidate short side (columns): detection quality in [0, 1] (higher is better), the total
    GFLOPs spent, and the (H, W) actually run."""

    image_ids: tuple[Hashable, ...]
    short_sides: tuple[int, ...]
    quality: np.ndarray  # [N, K]
    gflops: np.ndarray  # [N, K]
    sizes: np.ndarray  # [N, K, 2]

    def costs(self, lam: float | np.ndarray) -> np.ndarray:
        """:func:`oracle_costs` per image, [N, K]; ``lam`` a scalar or one value per image."""
        return oracle_costs(self.quality, self.gflops, np.reshape(lam, (-1, 1)))

    def labels(self, lam: float | np.ndarray) -> np.ndarray:
        """Index of the best candidate per image (the smaller size on ties)."""
        return np.argmin(self.costs(lam), axis=1)

    def soft_targets(self, lam: float | np.ndarray, temperature: float) -> np.ndarray:
        """softmax(-cost / temperature) over the candidates, [N, K]."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        logits = -self.costs(lam) / temperature
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def take(self, rows: np.ndarray) -> "OracleTable":
        """The table restricted to the given row indices (e.g. one training batch)."""
        return OracleTable(tuple(self.image_ids[r] for r in rows), self.short_sides, self.quality[rows],
                           self.gflops[rows], self.sizes[rows])


def build_oracle_table(images: Iterable[tuple[Hashable, tuple[int, int], Callable[[], Any]]],
                       short_sides: Sequence[int], run: RunFn | None, cache: str | os.PathLike, *,
                       make_run: Callable[[], RunFn] | None = None, multiple: int = 32, max_long: int = 2048,
                       meta: dict | None = None, progress: bool = True) -> OracleTable:
    """Fill ``cache`` with every (image, short side) pair not already in it, then return the full table.

    ``images`` yields (image_id, native (h, w), load); ``load()`` gives the image that ``run`` takes (e.g. a
    :class:`ardet.images.LoadedImage`) and is called only for images with missing entries. Without ``run``,
    ``make_run()`` builds one (e.g. loads the detector) only if some entry is missing; with neither, the cache must
    be complete. ``meta`` (e.g. the detector, resampler and annotation file; the size rule is added) is written as
    the cache's first record and must match on resume: a cache made with another detector or for other images is
    never mixed in, while new images or new candidate sizes extend it.
    """
    from tqdm import tqdm

    cache = Path(cache)
    short_sides = tuple(int(s) for s in short_sides)
    meta = {"multiple": multiple, "max_long": max_long, **(meta or {})}
    done = _read_cache(cache, meta)
    images = list(images)
    todo = [(i, hw, load) for i, hw, load in images if any((_key(i), s) not in done for s in short_sides)]
    if todo and run is None:
        if make_run is None:
            raise ValueError(f"{cache}: {len(todo)} of {len(images)} images lack oracle entries and no detector "
                             f"was given to compute them")
        run = make_run()
    if todo:
        with JsonlWriter(cache) as writer:
            if not done and cache.stat().st_size == 0:
                writer.write({"meta": meta})
            for image_id, native, load in tqdm(todo, desc="oracle table", unit="img", disable=not progress):
                image = load()
                for s in short_sides:
                    if (_key(image_id), s) in done:
                        continue
                    size = target_size(native, s, multiple=multiple, max_long=max_long)
                    quality, gflops = run(image, size)
                    record = {"image_id": image_id, "short_side": s, "size": list(size),
                              "quality": float(quality), "gflops": float(gflops)}
                    writer.write(record)
                    done[(_key(image_id), s)] = record
    ids = tuple(i for i, _, _ in images)
    table = [[done[(_key(i), s)] for s in short_sides] for i in ids]
    return OracleTable(ids, short_sides,
                       np.array([[r["quality"] for r in row] for row in table], dtype=np.float64).reshape(len(ids), -1),
                       np.array([[r["gflops"] for r in row] for row in table], dtype=np.float64).reshape(len(ids), -1),
                       np.array([[r["size"] for r in row] for row in table], dtype=np.int64).reshape(len(ids), -1, 2))


def _key(image_id: Hashable) -> str:
    return str(image_id)  # JSON turns keys into strings; compare the same way for ints and strings


def _read_cache(path: Path, meta: dict) -> dict:
    """The cache's entries, after checking that every key both ``meta`` and the cache's own name agrees (a key the
    caller leaves out, e.g. no detector when only reading a table, is not checked)."""
    done = {}
    for record in read_jsonl(path):
        if "meta" in record:
            differ = sorted(k for k in meta.keys() & record["meta"].keys() if meta[k] != record["meta"][k])
            if differ:
                raise ValueError(f"{path}: oracle cache was made with other {', '.join(differ)} "
                                 f"({ {k: record['meta'][k] for k in differ} }, not { {k: meta[k] for k in differ} }); "
                                 f"use another cache file (oracle.cache) or delete this one")
            continue
        done[(_key(record["image_id"]), int(record["short_side"]))] = record
    return done


def image_quality(detections: list[dict], annotations: list[dict], image: dict, categories: list[dict]) -> float | None:
    """The quality the oracle maximises: COCO AP@[.5:.95] (all areas, 100 detections) of this one image, by
    ``ardet.coco.evaluate_bbox`` (pycocotools). None for an image without non-crowd annotations (AP undefined)."""
    if not any(not a.get("iscrowd", 0) for a in annotations):
        return None
    # Only the image's own categories: one without ground truth here has no recall, so COCOeval leaves it out of
    # the mean anyway, and evaluating it costs as much as one that counts (half the time with COCO's 80).
    present = {a["category_id"] for a in annotations}
    gt = {"images": [image], "annotations": annotations, "categories": [c for c in categories if c["id"] in present]}
    return max(0.0, evaluate_bbox(gt, [d for d in detections if d["category_id"] in present], [image["id"]])["AP"])
