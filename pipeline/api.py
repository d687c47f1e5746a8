"""The composed pipeline as a Python API: ``AdaptivePipeline.from_config(...)`` then call it on images.

    pipe = AdaptivePipeline.from_config("configs/pipeline/demo.yaml")
    result = pipe("photo.jpg")                    # PipelineResult: detections in original pixels, size, costs
    prep = pipe.preprocess("photo.jpg")           # stop before the detector: the resampled image + how to map back
    boxes = prep.to_original(my_boxes_xyxy)       # boxes from your own detector, back in original pixels
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch

from ardet.coco import read_categories
from ardet.config import from_dict, load_config
from ardet.images import ImageSource, LoadedImage, check_unique_ids, file_image_id, to_image
from eval import ImageResult, measuring
from eval.config import DetectorSpec
from pipeline.policies import PolicyContext, SinglePassPolicy, build_policy


@dataclass
class PipelineConfig:
    detector: DetectorSpec = field(default_factory=DetectorSpec)
    policy: dict[str, Any] = field(default_factory=lambda: {"kind": "fixed", "short": 800})
    categories: str | None = None  # a COCO JSON whose categories the detector's classes map to; None: the model's ids
    device: str = "cpu"
    exif: str = "ignore"  # image loading policy (ardet.load_image): "ignore" or "apply"
    # What each result measures besides time (eval.measuring): FLOPs cost one counted forward per new input shape;
    # peak memory resets the process's peak statistics (VmHWM, CUDA's), which a host application may read too.
    count_flops: bool = True
    measure_memory: bool = False

    def __post_init__(self):
        if not self.detector.spec:
            raise ValueError("detector.spec is required (a hub id, a save_pretrained folder, or a detector YAML)")


@dataclass(frozen=True)
class PipelineResult(ImageResult):
    """One image through the pipeline: :class:`eval.ImageResult` (detections in original pixels, the (H, W) the
    detector saw, factor, resampler, per-stage FLOPs and seconds, ...) and the image's id."""

    image_id: Any = None

    def to_coco(self) -> list[dict]:
        return self.detections.to_coco(self.image_id)


@dataclass(frozen=True)
class Preprocessed:
    """An image rendered at the size the policy chose, for a detector of the caller's own."""

    pixels: torch.Tensor  # float32 [3, H, W] in [0, 1], the caller's to modify (never the input's storage)
    original_size: tuple[int, int]
    size: tuple[int, int]
    factor: float
    resampler: str
    flops: dict[str, int]
    seconds: dict[str, float]

    def to_original(self, boxes: torch.Tensor | Sequence) -> torch.Tensor:
        """Boxes ``[..., 4]`` in this image's pixels (xyxy or xywh: both scale the same; a tensor, an array or lists)
        -> original-image pixels, as a float tensor (integer boxes too: their scale is not an integer)."""
        (h, w), (hh, ww) = self.original_size, self.size
        boxes = torch.as_tensor(boxes)
        if boxes.numel() == 0:  # no detections, as [] or an empty array
            boxes = boxes.reshape(0, 4)
        if boxes.ndim == 0 or boxes.shape[-1] != 4:
            raise ValueError(f"to_original: boxes must be shaped [..., 4], got {tuple(boxes.shape)}")
        boxes = boxes if boxes.is_floating_point() else boxes.float()
        return boxes * torch.tensor([w / ww, h / hh, w / ww, h / hh], dtype=boxes.dtype, device=boxes.device)


class AdaptivePipeline:
    """A policy (fixed, adaptive, cascade, ...) with its detector, callable on paths, PIL images or tensors."""

    def __init__(self, policy, detector, exif: str = "ignore", category_names: dict[int, str] | None = None,
                 count_flops: bool = True, measure_memory: bool = False):
        if exif not in ("ignore", "apply"):
            raise ValueError(f"exif must be 'ignore' or 'apply', got {exif!r}")
        self.policy, self.detector, self.exif = policy, detector, exif
        self.measuring = functools.partial(measuring, flops=count_flops, memory=measure_memory)
        self.category_names = category_names or {
            category: detector.model.config.id2label[label] for label, category in detector.label_map.items()}

    @classmethod
    def from_config(cls, config: str | Path | dict, overrides: Sequence[str] = ()) -> "AdaptivePipeline":
        """From a YAML file or a dict shaped like :class:`PipelineConfig` (``--set``-style ``overrides`` apply)."""
        from ardet.config import apply_overrides
        from detector import load_detector

        if isinstance(config, dict):
            cfg = from_dict(PipelineConfig, apply_overrides(config, list(overrides)))
        else:
            cfg = load_config(PipelineConfig, config, list(overrides))
        categories = read_categories(cfg.categories) if cfg.categories else None
        detector = load_detector(cfg.detector.spec, device=cfg.device, threshold=cfg.detector.threshold,
                                 top_k=cfg.detector.top_k, categories=categories)
        names = {c["id"]: c["name"] for c in categories} if categories else None
        return cls(build_policy(cfg.policy, PolicyContext(detector, cfg.device)), detector, cfg.exif, names,
                   cfg.count_flops, cfg.measure_memory)

    def load(self, image: ImageSource | LoadedImage, image_id: str | int | None = None) -> LoadedImage:
        """Any accepted image source as a :class:`ardet.LoadedImage`, with this pipeline's EXIF policy."""
        return to_image(image, image_id=image_id, exif=self.exif)

    def __call__(self, images: ImageSource | LoadedImage | list) -> PipelineResult | list[PipelineResult]:
        """Detect on one image or a list (each at its own chosen size); boxes in each image's original pixels.
        ``image_id``: a file's :func:`ardet.images.file_image_id`; an image given as pixels, its index in the list
        (0 alone); :meth:`load` sets any other. Ids in one list must differ (COCO results are joined by id).
        One pipeline may serve several threads: each call's costs are its own."""
        if not isinstance(images, list):
            return self._detect(self.load(images))
        ids = [im.id if isinstance(im, LoadedImage) else file_image_id(im) if isinstance(im, (str, os.PathLike))
               else i for i, im in enumerate(images)]
        check_unique_ids(ids, "pixels take their list index, files their name's stem; give ids with "
                              "pipe.load(image, image_id=...)")
        return [self._detect(self.load(im, image_id)) for im, image_id in zip(images, ids)]

    def _detect(self, image: LoadedImage) -> PipelineResult:
        with self.measuring():
            result = self.policy(image)
        return PipelineResult(**{f.name: getattr(result, f.name) for f in fields(result)}, image_id=image.id)

    def preprocess(self, image: ImageSource | LoadedImage) -> Preprocessed:
        """The detection preprocessing stage alone: the image at the policy's size, with its factor and cost."""
        if not isinstance(self.policy, SinglePassPolicy):
            raise ValueError(f"policy {self.policy.name!r} needs the detector to choose a size (e.g. a cascade); "
                             f"preprocess works with fixed and adaptive policies")
        image = self.load(image)
        with self.measuring():
            rendered = self.policy.preprocess(image)
            costs = self.policy.meter.take()
        pixels = rendered.pixels[0].to("cpu", copy=True)  # at an unchanged size, the input itself
        return Preprocessed(pixels, image.size, rendered.size, rendered.factor, rendered.resampler, costs["flops"],
                            costs["seconds"])

