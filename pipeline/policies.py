"""Policies: how each image's input size and resampler are chosen. The eval harness runs any of them.

A registry maps a config ``kind`` to a builder ``(entry, context) -> Policy``, so an eval config lists policies as
``{kind: fixed, short: 800, resampler: bilinear}`` entries and a new kind is one ``@register_policy`` away.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

import sr
from ardet.config import from_dict
from ardet.images import LoadedImage
from detector import Detections, Detector, detr_target_size
from eval import CostMeter, ImageResult, Policy

PolicyBuilder = Callable[[dict, "PolicyContext"], Policy]
_POLICIES: dict[str, PolicyBuilder] = {}


@dataclass
class PolicyContext:
    """What policies built from one config share: the detector, the device, the dataset (only the oracle reads its
    ground truth), and LIIF models and scale predictors loaded once by name or path."""

    detector: Detector
    device: str = "cpu"
    dataset: Any = None  # eval.CocoDataset
    _models: dict[tuple[str, str], torch.nn.Module] = field(default_factory=dict)

    def sr_model(self, name_or_path: str) -> torch.nn.Module:
        return self._load("sr", name_or_path, lambda: sr.load_model(name_or_path, device=self.device))

    def predictor(self, path: str) -> torch.nn.Module:
        import scale_predictor

        return self._load("predictor", path, lambda: scale_predictor.load_predictor(path).to(self.device))

    def _load(self, kind: str, name: str, load: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        if (kind, name) not in self._models:
            self._models[kind, name] = load()
        return self._models[kind, name]


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


class SinglePassPolicy:
    """Decide a size, render the image at it, detect once. Subclasses define :meth:`decide`.

    :meth:`preprocess` stops before the detector, for callers that run a detector of their own.
    """

    RESAMPLERS = ("bilinear", "bicubic", "liif")

    def __init__(self, detector: Detector, resampler: str, sr_model: torch.nn.Module | None, kind: str,
                 sr_min_factor: float = 1.0):
        _check_resampler(kind, resampler, sr_model, sr_min_factor)
        self.detector, self.resampler, self.sr_model = detector, resampler, sr_model
        self.sr_min_factor = sr_min_factor
        self.meter = CostMeter(detector.device)

    def decide(self, image: LoadedImage) -> tuple[tuple[int, int], float]:
        """The (H, W) to render ``image`` at, and the scale factor it stands for."""
        raise NotImplementedError

    @torch.no_grad()
    def preprocess(self, image: LoadedImage) -> tuple[torch.Tensor, tuple[int, int], float, str]:
        """``image`` rendered at the decided size: ([1, 3, H, W] on the detector's device, (H, W), factor, resampler
        used: "liif" where a model is given and the image grows on an axis by more than ``sr_min_factor``, else the
        interpolation, "none" when unchanged).
        The costs stay in :attr:`meter` until ``meter.take()``."""
        size, factor = self.decide(image)
        x = image.pixels.unsqueeze(0).to(self.detector.device)
        if size == image.size:
            return x, size, factor, "none"
        mode = "bilinear" if self.resampler == "liif" else self.resampler
        x = self.meter.measure("resample", sr.resample, x, size, model=self.sr_model, mode=mode,
                               min_factor=self.sr_min_factor)
        uses_model = self.sr_model is not None and sr.uses_model(image.size, size, self.sr_min_factor)
        return x, size, factor, "liif" if uses_model else mode

    @torch.no_grad()
    def __call__(self, image: LoadedImage) -> ImageResult:
        x, size, factor, used = self.preprocess(image)
        # DETR's FLOPs depend on the input shape only, not on the original size boxes are mapped back to.
        detections = self.meter.measure("detector", self.detector.detect, [x[0]], [image.size], flops_key=size)[0]
        return ImageResult(detections, size, factor, used, **self.meter.take())


class FixedPolicy(SinglePassPolicy):
    """Every image at DETR's size rule (shortest edge ``short``, longest at most ``max_size``), or at ``scale`` times
    its own size when given, rendered by ``resampler``: ``bilinear``/``bicubic`` interpolation (antialiased where it
    shrinks) or ``liif`` (``sr_model`` where the image grows on an axis by more than ``sr_min_factor``, bilinear
    otherwise)."""

    adaptive = False  # the size follows from the image's shape only, not its content

    def __init__(self, detector: Detector, short: int = 800, max_size: int = 1333, resampler: str = "bilinear",
                 sr_model: torch.nn.Module | None = None, name: str | None = None, scale: float | None = None,
                 sr_min_factor: float = 1.0):
        super().__init__(detector, resampler, sr_model, "fixed", sr_min_factor)
        if not 0 < short <= max_size:
            raise ValueError(f"fixed policy: need 0 < short <= max_size, got short={short}, max_size={max_size}")
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"fixed policy: scale must be a positive number, got {scale}")
        self.short, self.max_size, self.scale = short, max_size, scale
        size_rule = f"x{scale:g}" if scale is not None else f"{short}"
        self.name = name or f"fixed-{size_rule}-{resampler}" + (
            f"-max{max_size}" if max_size != 1333 and scale is None else "") + _min_factor_tag(sr_min_factor)

    def decide(self, image: LoadedImage) -> tuple[tuple[int, int], float]:
        h, w = image.size
        if self.scale is not None:
            return (max(1, round(h * self.scale)), max(1, round(w * self.scale))), self.scale
        return detr_target_size(h, w, self.short, self.max_size), detr_scale(h, w, self.short, self.max_size)


class AdaptivePolicy(SinglePassPolicy):
    """The scale predictor chooses each image's size from a thumbnail and the native size; the image is rendered at
    that size (LIIF where it grows, antialiased interpolation where it shrinks) and detected."""

    adaptive = True

    def __init__(self, detector: Detector, predictor: torch.nn.Module, resampler: str = "bilinear",
                 sr_model: torch.nn.Module | None = None, knob: float | None = None, name: str | None = None,
                 sr_min_factor: float = 1.0):
        super().__init__(detector, resampler, sr_model, "adaptive", sr_min_factor)
        self.predictor, self.knob = predictor.eval(), knob
        self.name = name or f"adaptive-{resampler}" + ("" if knob is None else f"-knob{knob:g}") + _min_factor_tag(
            sr_min_factor)

    def decide(self, image: LoadedImage) -> tuple[tuple[int, int], float]:
        """The predictor's choice (its cost, thumbnail included, goes to the "predictor" stage)."""
        decision = self.meter.measure("predictor", self.predictor.predict, [image.pixels], [image.size],
                                      knob=self.knob)[0]
        return decision.size, decision.factor


UNCERTAINTY_SCORES = ("low_confidence", "ambiguous", "tiny")


def uncertainty(detections: Detections, input_size: tuple[int, int], original_size: tuple[int, int], score: str,
                top_k: int = 5, band: tuple[float, float] = (0.2, 0.6), tiny_side: float = 16.0,
                confident: float = 0.3) -> float:
    """Image-level uncertainty of a low-resolution pass (higher means a second, larger pass is more worth it).

    - ``low_confidence``: 1 - mean of the top-``top_k`` scores (1 when nothing was detected);
    - ``ambiguous``: how many detections score inside ``band`` (neither clearly object nor clearly background);
    - ``tiny``: the share of confident (score >= ``confident``) detections whose shorter side is below ``tiny_side``
      pixels *at the input size the detector saw*, where small objects are the ones a low resolution loses.
    """
    scores = detections.scores
    if score == "low_confidence":
        top = scores.topk(min(top_k, scores.numel())).values
        return 1.0 - float(top.mean()) if top.numel() else 1.0
    if score == "ambiguous":
        return float(((scores >= band[0]) & (scores < band[1])).sum())
    if score == "tiny":
        keep = scores >= confident
        if not keep.any():
            return 0.0
        ratio = min(input_size[0] / original_size[0], input_size[1] / original_size[1])
        return float((detections.boxes[keep, 2:].min(-1).values * ratio < tiny_side).float().mean())
    raise ValueError(f"uncertainty score must be one of {', '.join(UNCERTAINTY_SCORES)}, got {score!r}")


class CascadePolicy:
    """Little-Big for detection: detect at a low size; only when the image-level uncertainty reaches ``threshold``,
    detect again at a high size (fixed, or the predictor's) and keep that pass. The cost counts both passes."""

    adaptive = True

    def __init__(self, detector: Detector, low: int, high: int | None = None, max_size: int = 1333,
                 score: str = "low_confidence", threshold: float = 0.5, resampler: str = "bilinear",
                 sr_model: torch.nn.Module | None = None, predictor: torch.nn.Module | None = None,
                 knob: float | None = None, score_args: dict | None = None, name: str | None = None,
                 sr_min_factor: float = 1.0):
        _check_resampler("cascade", resampler, sr_model, sr_min_factor)
        if (high is None) == (predictor is None):
            raise ValueError("cascade policy: give exactly one of a fixed `high` size and a scale predictor")
        if score not in UNCERTAINTY_SCORES:
            raise ValueError(f"cascade policy: score must be one of {', '.join(UNCERTAINTY_SCORES)}, got {score!r}")
        self.score, self.threshold, self.score_args = score, float(threshold), dict(score_args or {})
        render = {"resampler": resampler, "sr_model": sr_model, "sr_min_factor": sr_min_factor}
        self.fixed_low = FixedPolicy(detector, low, max_size, name="low", **render)
        self.high = (FixedPolicy(detector, high, max_size, name="high", **render) if predictor is None
                     else AdaptivePolicy(detector, predictor, knob=knob, name="high", **render))
        self.name = name or f"cascade-{low}-{high or 'adaptive'}-{score}{threshold:g}" + _min_factor_tag(sr_min_factor)

    @torch.no_grad()
    def __call__(self, image: LoadedImage) -> ImageResult:
        first = self.fixed_low(image)
        u = uncertainty(first.detections, first.size, image.size, self.score, **self.score_args)
        extra = {"uncertainty": u, "rerun": u >= self.threshold, "low_size": list(first.size)}
        if not extra["rerun"]:
            return dataclasses.replace(first, extra=extra)
        second = self.high(image)
        both = {k: first.flops.get(k, 0) + second.flops.get(k, 0) for k in {*first.flops, *second.flops}}
        seconds = {k: first.seconds.get(k, 0.0) + second.seconds.get(k, 0.0) for k in {*first.seconds, *second.seconds}}
        return dataclasses.replace(second, flops=both, seconds=seconds, extra=extra,
                                   uncounted_ops=tuple(sorted({*first.uncounted_ops, *second.uncounted_ops})))


class OraclePolicy:
    """The per-image best of K candidate short sides, judged against the ground truth: an upper bound on what any
    scale predictor could reach with this detector and resampler, NOT a deployable policy (it needs the answers).

    Each candidate is detected; the kept one maximises per-image COCO AP minus ``lam`` x total GFLOPs (the smaller
    size on ties). The reported cost is that of the kept candidate alone: what a perfect predictor would pay."""

    adaptive = True

    def __init__(self, detector: Detector, dataset, short_sides: list[int], max_size: int = 1333,
                 resampler: str = "bilinear", sr_model: torch.nn.Module | None = None, lam: float = 0.0,
                 name: str | None = None, sr_min_factor: float = 1.0):
        from scale_predictor.oracle import image_quality

        self.lam, self.quality, self.categories = float(lam), image_quality, dataset.categories
        self.images = {img["id"]: img for img in dataset.gt["images"]}
        self.annotations: dict[int, list[dict]] = {i: [] for i in self.images}
        for a in dataset.gt["annotations"]:
            self.annotations[a["image_id"]].append(a)
        self.candidates = [FixedPolicy(detector, s, max_size, resampler, sr_model, f"short{s}",
                                       sr_min_factor=sr_min_factor)
                           for s in sorted(short_sides)]
        self.name = name or f"oracle-{resampler}" + (f"-lam{lam:g}" if lam else "") + _min_factor_tag(sr_min_factor)

    @torch.no_grad()
    def __call__(self, image: LoadedImage) -> ImageResult:
        if image.id not in self.images:
            raise ValueError(f"oracle policy: image {image.id!r} is not in the dataset, so it has no ground truth")
        best, best_value, qualities = None, -math.inf, []
        for candidate in self.candidates:
            result = candidate(image)
            q = self.quality(result.detections.to_coco(image.id), self.annotations[image.id], self.images[image.id],
                             self.categories)
            value = (0.0 if q is None else q) - self.lam * sum(result.flops.values()) / 1e9
            qualities.append(q)
            if value > best_value:  # strict: the smaller size wins ties
                best, best_value = result, value
        extra = {"oracle": True, "candidate_quality": qualities,
                 "candidate_short_sides": [c.short for c in self.candidates]}
        return dataclasses.replace(best, extra=extra)


def _check_resampler(kind: str, resampler: str, sr_model, sr_min_factor: float = 1.0) -> None:
    if resampler not in SinglePassPolicy.RESAMPLERS:
        raise ValueError(f"{kind} policy: resampler must be one of {', '.join(SinglePassPolicy.RESAMPLERS)}, "
                         f"got {resampler!r}")
    if (resampler == "liif") != (sr_model is not None):
        raise ValueError(f"{kind} policy: resampler 'liif' needs an sr_model, and only it takes one")
    if not (math.isfinite(sr_min_factor) and sr_min_factor >= 1):
        raise ValueError(f"{kind} policy: sr_min_factor must be a number >= 1, got {sr_min_factor}")
    if sr_min_factor != 1 and resampler != "liif":
        raise ValueError(f"{kind} policy: sr_min_factor only applies to resampler 'liif', not {resampler!r}")


def _min_factor_tag(sr_min_factor: float) -> str:
    return "" if sr_min_factor == 1 else f"-above{sr_min_factor:g}"


def detr_scale(h: int, w: int, short: int, max_size: int) -> float:
    """The scale DETR's size rule applies before rounding: ``short / min(h, w)``, capped so the long side fits."""
    return min(short / min(h, w), max_size / max(h, w))


@dataclass
class PolicyOptions:
    """What every policy kind's config entry takes."""

    resampler: str = "bilinear"  # bilinear | bicubic | liif
    sr_model: str | None = None  # resampler liif: a sr.load_model name or checkpoint path
    sr_min_factor: float = 1.0  # resampler liif: the model renders only enlargements by more than this; bilinear below
    name: str | None = None  # default: made from the options


@dataclass
class FixedOptions(PolicyOptions):
    short: int = 800
    max_size: int = 1333
    scale: float | None = None  # instead of the DETR rule: every image at scale x its own size


@register_policy("fixed")
def build_fixed(entry: dict, context: PolicyContext) -> FixedPolicy:
    o = from_dict(FixedOptions, entry, prefix="policies[fixed].")
    return FixedPolicy(context.detector, o.short, o.max_size, o.resampler, _resampler_model(o, context, "fixed"),
                       o.name, o.scale, o.sr_min_factor)


def _resampler_model(o, context: PolicyContext, kind: str) -> torch.nn.Module | None:
    """The LIIF model a policy's options ask for (``resampler: liif`` with ``sr_model``), checked both ways."""
    if o.resampler == "liif" and not o.sr_model:
        raise ValueError(f"policies[{kind}]: resampler liif needs sr_model (a registry name or a checkpoint path)")
    if o.resampler != "liif" and o.sr_model:
        raise ValueError(f"policies[{kind}]: sr_model is only used with resampler liif, not {o.resampler!r}")
    return context.sr_model(o.sr_model) if o.resampler == "liif" else None


@dataclass
class AdaptiveOptions(PolicyOptions):
    predictor: str = ""  # a scale predictor checkpoint (.safetensors)
    knob: float | None = None  # trade-off knob in [0, 1] for knob-conditioned predictors


@register_policy("adaptive")
def build_adaptive(entry: dict, context: PolicyContext) -> AdaptivePolicy:
    o = from_dict(AdaptiveOptions, entry, prefix="policies[adaptive].")
    if not o.predictor:
        raise ValueError("policies[adaptive]: `predictor` (a scale predictor checkpoint) is required")
    return AdaptivePolicy(context.detector, context.predictor(o.predictor), o.resampler,
                          _resampler_model(o, context, "adaptive"), o.knob, o.name, o.sr_min_factor)


@dataclass
class CascadeOptions(PolicyOptions):
    low: int = 512
    high: int | None = None  # a fixed second-pass short side, or None with `predictor` for a predicted one
    predictor: str | None = None
    knob: float | None = None
    max_size: int = 1333
    score: str = "low_confidence"
    threshold: float = 0.5
    score_args: dict = field(default_factory=dict)  # top_k, band, tiny_side, confident: see pipeline.uncertainty


@register_policy("cascade")
def build_cascade(entry: dict, context: PolicyContext) -> CascadePolicy:
    o = from_dict(CascadeOptions, entry, prefix="policies[cascade].")
    predictor = context.predictor(o.predictor) if o.predictor else None
    return CascadePolicy(context.detector, o.low, o.high, o.max_size, o.score, o.threshold, o.resampler,
                         _resampler_model(o, context, "cascade"), predictor, o.knob, o.score_args, o.name,
                         o.sr_min_factor)


@dataclass
class OracleOptions(PolicyOptions):
    short_sides: list[int] = field(default_factory=lambda: [480, 640, 800, 1024])
    max_size: int = 1333
    lam: float = 0.0  # GFLOPs penalty per image in the oracle's choice


@register_policy("oracle")
def build_oracle(entry: dict, context: PolicyContext) -> OraclePolicy:
    o = from_dict(OracleOptions, entry, prefix="policies[oracle].")
    if context.dataset is None:
        raise ValueError("policies[oracle]: the oracle needs the dataset's ground truth, which this run lacks")
    return OraclePolicy(context.detector, context.dataset, o.short_sides, o.max_size, o.resampler,
                        _resampler_model(o, context, "oracle"), o.lam, o.name, o.sr_min_factor)
