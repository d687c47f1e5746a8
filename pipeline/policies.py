"""Policies: how each image's input size and resampler are chosen. The eval harness runs any of them.

A registry maps a config ``kind`` to a builder ``(entry, context) -> Policy``, so an eval config lists policies as
``{kind: fixed, short: 800, resampler: bilinear}`` entries and a new kind is one ``@register_policy`` away.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

import sr
from ardet.config import from_dict
from ardet.images import LoadedImage
from detector import Detector, detr_target_size
from eval import CostMeter, ImageResult, Policy

PolicyBuilder = Callable[[dict, "PolicyContext"], Policy]
_POLICIES: dict[str, PolicyBuilder] = {}


@dataclass
class PolicyContext:
    """What policies built from one config share: the detector, the device, LIIF models loaded once by name."""

    detector: Detector
    device: str = "cpu"
    _sr_models: dict[str, torch.nn.Module] = field(default_factory=dict)

    def sr_model(self, name_or_path: str) -> torch.nn.Module:
        if name_or_path not in self._sr_models:
            self._sr_models[name_or_path] = sr.load_model(name_or_path, device=self.device)
        return self._sr_models[name_or_path]


def register_policy(kind: str) -> Callable[[PolicyBuilder], PolicyBuilder]:
    def decorator(builder: PolicyBuilder) -> PolicyBuilder:
        _POLICIES[kind] = builder
        return builder
    return decorator


def list_policies() -> list[str]:
    return sorted(_POLICIES)


def build_policy(entry: dict[str, Any], context: PolicyContext) -> Policy:
    """One policy from a config entry ``{kind: NAME, ...options}``."""
    options = dict(entry)
    kind = options.pop("kind", None)
    if kind not in _POLICIES:
        raise ValueError(f"policy {entry!r}: unknown or missing kind {kind!r}; known: {', '.join(list_policies())}")
    return _POLICIES[kind](options, context)


def build_policies(entries: list[dict[str, Any]], context: PolicyContext) -> list[Policy]:
    policies = [build_policy(e, context) for e in entries]
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"two policies share a name: {names}; give one a `name:`")
    return policies


class FixedPolicy:
    """Every image at DETR's size rule (shortest edge ``short``, longest at most ``max_size``), rendered by
    ``resampler``: ``bilinear``/``bicubic`` interpolation (antialiased where it shrinks) or ``liif`` (``sr_model``
    where the image grows on an axis, bilinear otherwise)."""

    RESAMPLERS = ("bilinear", "bicubic", "liif")
    adaptive = False  # the size follows from the image's shape only, not its content

    def __init__(self, detector: Detector, short: int = 800, max_size: int = 1333, resampler: str = "bilinear",
                 sr_model: torch.nn.Module | None = None, name: str | None = None):
        if resampler not in self.RESAMPLERS:
            raise ValueError(f"fixed policy: resampler must be one of {', '.join(self.RESAMPLERS)}, got {resampler!r}")
        if (resampler == "liif") != (sr_model is not None):
            raise ValueError("fixed policy: resampler 'liif' needs an sr_model, and only it takes one")
        if not 0 < short <= max_size:
            raise ValueError(f"fixed policy: need 0 < short <= max_size, got short={short}, max_size={max_size}")
        self.detector, self.short, self.max_size = detector, short, max_size
        self.resampler, self.sr_model = resampler, sr_model
        self.name = name or f"fixed-{short}-{resampler}" + (f"-max{max_size}" if max_size != 1333 else "")
        self.meter = CostMeter(detector.device)

    @torch.no_grad()
    def __call__(self, image: LoadedImage) -> ImageResult:
        h, w = image.size
        size = detr_target_size(h, w, self.short, self.max_size)
        x = image.pixels.unsqueeze(0).to(self.detector.device)
        resampler = "none"
        if size != (h, w):
            mode = "bilinear" if self.resampler == "liif" else self.resampler
            grows = size[0] > h or size[1] > w
            resampler = "liif" if self.sr_model is not None and grows else mode
            x = self.meter.measure("resample", sr.resample, x, size, model=self.sr_model, mode=mode)
        # DETR's FLOPs depend on the input shape only, not on the original size boxes are mapped back to.
        detections = self.meter.measure("detector", self.detector.detect, [x[0]], [(h, w)], flops_key=size)[0]
        return ImageResult(detections, size, detr_scale(h, w, self.short, self.max_size), resampler,
                           **self.meter.take())


def detr_scale(h: int, w: int, short: int, max_size: int) -> float:
    """The scale DETR's size rule applies before rounding: ``short / min(h, w)``, capped so the long side fits."""
    return min(short / min(h, w), max_size / max(h, w))


@dataclass
class FixedOptions:
    short: int = 800
    max_size: int = 1333
    resampler: str = "bilinear"
    sr_model: str | None = None  # resampler liif: a sr.load_model name or checkpoint path
    name: str | None = None


@register_policy("fixed")
def build_fixed(entry: dict, context: PolicyContext) -> FixedPolicy:
    o = from_dict(FixedOptions, entry, prefix="policies[fixed].")
    if o.resampler == "liif" and not o.sr_model:
        raise ValueError("policies[fixed]: resampler liif needs sr_model (a registry name or a checkpoint path)")
    model = context.sr_model(o.sr_model) if o.resampler == "liif" else None
    if model is None and o.sr_model:
        raise ValueError(f"policies[fixed]: sr_model is only used with resampler liif, not {o.resampler!r}")
    return FixedPolicy(context.detector, o.short, o.max_size, o.resampler, model, o.name)
