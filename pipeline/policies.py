"""Policies: how each image's input size and resampler are chosen. The eval harness runs any of them.

A registry maps a config ``kind`` to a builder ``(entry, context) -> Policy``, so an eval config lists policies as
``{kind: fixed, short: 800, resampler: bilinear}`` entries and a new kind is one ``@register_policy`` away.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

import scale_predictor
import sr
from ardet.config import from_dict, is_int, is_number, repeated
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
    models: dict[tuple[str, str], torch.nn.Module] = field(default_factory=dict)  # loaded so far: (kind, name)

    def sr_model(self, name_or_path: str) -> torch.nn.Module:
        return self._load("sr", name_or_path, lambda: sr.load_model(name_or_path, device=self.device))

    def predictor(self, path: str) -> torch.nn.Module:
        return self._load("predictor", path, lambda: scale_predictor.load_predictor(path, device=self.device))

    def _load(self, kind: str, name: str, load: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        if (kind, name) not in self.models:
            self.models[kind, name] = load()
        return self.models[kind, name]


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
    shared = sorted(repeated(p.name for p in policies))
    if shared:
        raise ValueError(f"policies share a name: {', '.join(shared)}; give each a `name:` (in a sweep entry, a "
                         f"template such as name: \"fixed-{{short}}-{{sr_model}}\")")
    return policies


@dataclass(frozen=True)
class Rendered:
    """An image at the size a policy decided, before the detector."""

    pixels: torch.Tensor  # [1, 3, H, W] on the detector's device; at an unchanged size, the input image itself
    size: tuple[int, int]
    factor: float
    resampler: str  # what rendered it (Resampler.method): "none" when the size is unchanged


class SinglePassPolicy:
    """Decide a size, render the image at it, detect once. Subclasses define :meth:`decide`.

    :meth:`preprocess` stops before the detector, for callers that run a detector of their own.
    """

    def __init__(self, detector: Detector, resampler: str | sr.Resampler):
        self.detector, self.resampler = detector, _resampler(resampler)
        self.meter = CostMeter(detector.device)

    def decide(self, image: LoadedImage) -> tuple[tuple[int, int], float]:
        """The (H, W) to render ``image`` at, and the scale factor it stands for."""
        raise NotImplementedError

    @torch.no_grad()
    def preprocess(self, image: LoadedImage) -> Rendered:
        """``image`` rendered at the decided size. The costs stay in :attr:`meter` until ``meter.take()``."""
        self.meter.reset()  # an earlier call that raised must not bill its stages to this image
        return self.render(image, *self.decide(image))

    @torch.no_grad()
    def render(self, image: LoadedImage, size: tuple[int, int], factor: float) -> Rendered:
        """:meth:`preprocess` after the decision: ``image`` resampled to ``size``."""
        x = image.pixels.unsqueeze(0).to(self.detector.device)
        method = self.resampler.method(image.size, size)
        if method != "none":
            x = self.meter.measure("resample", self.resampler, x, size)
        return Rendered(x, size, factor, method)

    @torch.no_grad()
    def __call__(self, image: LoadedImage) -> ImageResult:
        return self.detect(image, self.preprocess(image))

    @torch.no_grad()
    def detect(self, image: LoadedImage, rendered: Rendered) -> ImageResult:
        """The detector on :meth:`preprocess`'s output; the result carries every cost since it started."""
        # DETR's FLOPs depend on the input shape only, not on the original size boxes are mapped back to.
        detections = self.meter.measure("detector", self.detector.detect, [rendered.pixels[0]], [image.size],
                                        flops_key=rendered.size)[0]
        return ImageResult(detections, rendered.size, rendered.factor, rendered.resampler, **self.meter.take())


class FixedPolicy(SinglePassPolicy):
    """Every image at DETR's size rule (shortest edge ``short``, longest at most ``max_size``), or at ``scale`` times
    its own size when given, rendered by ``resampler`` (a :class:`sr.Resampler`, or the name of an interpolation)."""

    adaptive = False  # the size follows from the image's shape only, not its content

    def __init__(self, detector: Detector, short: int = 800, max_size: int = 1333,
                 resampler: str | sr.Resampler = "bilinear", name: str | None = None, scale: float | None = None):
        super().__init__(detector, resampler)
        if not 0 < short <= max_size:
            raise ValueError(f"fixed policy: need 0 < short <= max_size, got short={short}, max_size={max_size}")
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"fixed policy: scale must be a positive number, got {scale}")
        self.short, self.max_size, self.scale = short, max_size, scale
        size_rule = f"x{scale:g}" if scale is not None else f"{short}"
        self.name = name or f"fixed-{size_rule}-{self.resampler.mode}" + (
            f"-max{max_size}" if max_size != 1333 and scale is None else "") + _min_factor_tag(self.resampler)

    def decide(self, image: LoadedImage) -> tuple[tuple[int, int], float]:
        h, w = image.size
        if self.scale is not None:
            return (max(1, round(h * self.scale)), max(1, round(w * self.scale))), self.scale
        return detr_target_size(h, w, self.short, self.max_size), detr_scale(h, w, self.short, self.max_size)


class AdaptivePolicy(SinglePassPolicy):
    """The scale predictor chooses each image's size from a thumbnail and the native size; the image is rendered at
    that size (LIIF where it grows, antialiased interpolation where it shrinks) and detected."""

    adaptive = True

    def __init__(self, detector: Detector, predictor: torch.nn.Module, resampler: str | sr.Resampler = "bilinear",
                 knob: float | None = None, name: str | None = None):
        super().__init__(detector, resampler)
        if knob is not None and not 0 <= knob <= 1:
            raise ValueError(f"adaptive policy: knob must be in [0, 1], got {knob}")
        if knob is not None and not predictor.use_knob:
            raise ValueError("adaptive policy: this predictor was trained without a knob; leave knob unset")
        self.predictor, self.knob = predictor.eval(), knob
        self.name = name or f"adaptive-{self.resampler.mode}" + ("" if knob is None else f"-knob{knob:g}") + (
            _min_factor_tag(self.resampler))

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
        w, h = detections.boxes[keep, 2], detections.boxes[keep, 3]  # COCO xywh in original pixels
        at_input = torch.minimum(w * input_size[1] / original_size[1], h * input_size[0] / original_size[0])
        return float((at_input < tiny_side).float().mean())
    raise ValueError(f"uncertainty score must be one of {', '.join(UNCERTAINTY_SCORES)}, got {score!r}")


class CascadePolicy:
    """Little-Big for detection: detect at a low size; only when the image-level uncertainty reaches ``threshold``,
    detect again at a high size (fixed and larger than ``low``, or the predictor's) and keep that pass. The cost
    counts both passes. When the predictor asks for no more than the first pass had, the first pass is kept
    (``extra``: ``rerun`` false, ``high_size``), and only the predictor's cost is added."""

    adaptive = True

    def __init__(self, detector: Detector, low: int, high: int | None = None, max_size: int = 1333,
                 score: str = "low_confidence", threshold: float = 0.5, resampler: str | sr.Resampler = "bilinear",
                 predictor: torch.nn.Module | None = None, knob: float | None = None, score_args: dict | None = None,
                 name: str | None = None):
        resampler = _resampler(resampler)
        if (high is None) == (predictor is None):
            raise ValueError("cascade policy: give exactly one of a fixed `high` size and a scale predictor")
        if high is not None and high <= low:
            raise ValueError(f"cascade policy: the second pass must be larger than the first, got low={low}, "
                             f"high={high}")
        if score not in UNCERTAINTY_SCORES:
            raise ValueError(f"cascade policy: score must be one of {', '.join(UNCERTAINTY_SCORES)}, got {score!r}")
        if not math.isfinite(threshold):
            raise ValueError(f"cascade policy: threshold must be a finite number, got {threshold}")
        self.score, self.threshold, self.score_args = score, float(threshold), dict(score_args or {})
        _check_score_args(self.score_args)
        if knob is not None and predictor is None:
            raise ValueError("cascade policy: knob steers the predictor of the second pass; with a fixed high size "
                             "there is none")
        self.fixed_low = FixedPolicy(detector, low, max_size, resampler, name="low")
        self.high = (FixedPolicy(detector, high, max_size, resampler, name="high") if predictor is None
                     else AdaptivePolicy(detector, predictor, resampler, knob=knob, name="high"))
        self.name = name or (f"cascade-{low}-{high or 'adaptive'}-{score}{threshold:g}"
                             + ("" if knob is None else f"-knob{knob:g}")
                             + ("" if resampler.mode == "bilinear" else f"-{resampler.mode}")
                             + _min_factor_tag(resampler))

    @torch.no_grad()
    def __call__(self, image: LoadedImage) -> ImageResult:
        first = self.fixed_low(image)
        u = uncertainty(first.detections, first.size, image.size, self.score, **self.score_args)
        extra = {"uncertainty": u, "rerun": u >= self.threshold, "low_size": list(first.size)}
        if not extra["rerun"]:
            return dataclasses.replace(first, extra=extra)
        self.high.meter.reset()
        size, factor = self.high.decide(image)
        if size[0] <= first.size[0] and size[1] <= first.size[1]:  # the predictor asks for no more than low had:
            extra.update(rerun=False, high_size=list(size))  # keep the first pass, paying only for the decision
            second = dataclasses.replace(first, **self.high.meter.take())
        else:
            second = self.high.detect(image, self.high.render(image, size, factor))

        def merged(field_name: str, combine: Callable) -> dict:  # per stage, over the passes that ran it
            a, b = getattr(first, field_name), getattr(second, field_name)
            return {k: combine([d[k] for d in (a, b) if d.get(k) is not None]) for k in {*a, *b}}

        return dataclasses.replace(
            second, flops=merged("flops", sum), seconds=merged("seconds", sum), extra=extra,
            peak_memory_bytes=merged("peak_memory_bytes", max),  # the passes run one after the other
            flops_source=merged("flops_source", lambda s: "counted" if set(s) == {"counted"} else "shape-cache"),
            uncounted_ops=tuple(sorted({*first.uncounted_ops, *second.uncounted_ops})))


def _check_score_args(args: dict) -> None:
    """Names and values of :func:`uncertainty`'s options, checked when a policy is built rather than on its first
    image, after other policies' records are written."""
    defaults = {n: p.default for n, p in inspect.signature(uncertainty).parameters.items() if p.default is not p.empty}
    unknown = set(args) - set(defaults)
    if unknown:
        raise ValueError(f"cascade policy: unknown score_args {sorted(unknown)}; known: {', '.join(defaults)} "
                         f"(pipeline.uncertainty)")
    top_k, band, tiny_side, confident = ({**defaults, **args}[n] for n in ("top_k", "band", "tiny_side", "confident"))
    if not is_int(top_k) or top_k < 1:
        raise ValueError(f"cascade policy: score_args.top_k must be an integer >= 1, got {top_k!r}")
    if not (isinstance(band, (list, tuple)) and len(band) == 2 and all(map(is_number, band))
            and 0 <= band[0] < band[1] <= 1):
        raise ValueError(f"cascade policy: score_args.band must be [lo, hi] with 0 <= lo < hi <= 1, got {band!r}")
    if not (is_number(tiny_side) and tiny_side > 0 and is_number(confident) and 0 <= confident <= 1):
        raise ValueError(f"cascade policy: score_args need tiny_side > 0 and confident in [0, 1], got {args}")


class OraclePolicy:
    """The per-image best of K candidate short sides, judged against the ground truth: an upper bound on what any
    scale predictor could reach with this detector and resampler, NOT a deployable policy (it needs the answers).

    Each candidate is detected; the kept one maximises per-image COCO AP minus ``lam`` x total GFLOPs (the smaller
    size on ties). The reported cost is that of the kept candidate alone: what a perfect predictor would pay."""

    adaptive = True
    reference = True

    def __init__(self, detector: Detector, dataset, short_sides: list[int], max_size: int = 1333,
                 resampler: str | sr.Resampler = "bilinear", lam: float = 0.0, name: str | None = None):
        if not (math.isfinite(lam) and lam >= 0):
            raise ValueError(f"oracle policy: lam must be a finite number >= 0, got {lam}")
        self.lam, self.categories = float(lam), dataset.categories
        self.images = {img["id"]: img for img in dataset.gt["images"]}
        self.annotations: dict[int, list[dict]] = {i: [] for i in self.images}
        for a in dataset.gt["annotations"]:
            self.annotations[a["image_id"]].append(a)
        if not short_sides:
            raise ValueError("oracle policy: short_sides must list at least one candidate size")
        resampler = _resampler(resampler)
        self.candidates = [FixedPolicy(detector, s, max_size, resampler, f"short{s}") for s in sorted(short_sides)]
        self.name = name or f"oracle-{resampler.mode}" + (f"-lam{lam:g}" if lam else "") + _min_factor_tag(resampler)

    @torch.no_grad()
    def __call__(self, image: LoadedImage) -> ImageResult:
        if image.id not in self.images:
            raise ValueError(f"oracle policy: image {image.id!r} is not in the dataset, so it has no ground truth")
        results = [candidate(image) for candidate in self.candidates]  # in ascending size: ties go to the smaller
        qualities = [scale_predictor.image_quality(r.detections.to_coco(image.id), self.annotations[image.id],
                                                   self.images[image.id], self.categories) for r in results]
        costs = scale_predictor.oracle_costs(np.array([0.0 if q is None else q for q in qualities]),
                                             np.array([sum(r.flops.values()) / 1e9 for r in results]), self.lam)
        best = results[int(np.argmin(costs))]
        extra = {"oracle": True, "candidate_quality": qualities,
                 "candidate_short_sides": [c.short for c in self.candidates]}
        return dataclasses.replace(best, extra=extra)


def _resampler(resampler: str | sr.Resampler) -> sr.Resampler:
    return resampler if isinstance(resampler, sr.Resampler) else sr.Resampler(resampler)


def _min_factor_tag(resampler: sr.Resampler) -> str:
    return "" if resampler.min_factor == 1 else f"-above{resampler.min_factor:g}"


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
    return FixedPolicy(context.detector, o.short, o.max_size, _options_resampler(o, context, "fixed"), o.name, o.scale)


def _options_resampler(o: PolicyOptions, context: PolicyContext, kind: str) -> sr.Resampler:
    """The resampler a policy's options ask for: ``resampler``, and with ``liif`` the model ``sr_model`` names."""
    if o.resampler == "liif" and not o.sr_model:
        raise ValueError(f"policies[{kind}]: resampler liif needs sr_model (a registry name or a checkpoint path)")
    if o.resampler != "liif" and o.sr_model:
        raise ValueError(f"policies[{kind}]: sr_model is only used with resampler liif, not {o.resampler!r}")
    try:
        return sr.Resampler(o.resampler, context.sr_model(o.sr_model) if o.sr_model else None, o.sr_min_factor)
    except ValueError as e:
        raise ValueError(f"policies[{kind}]: {e}") from None


@dataclass
class AdaptiveOptions(PolicyOptions):
    predictor: str = ""  # a scale predictor checkpoint (.safetensors)
    knob: float | None = None  # trade-off knob in [0, 1] for knob-conditioned predictors


@register_policy("adaptive")
def build_adaptive(entry: dict, context: PolicyContext) -> AdaptivePolicy:
    o = from_dict(AdaptiveOptions, entry, prefix="policies[adaptive].")
    if not o.predictor:
        raise ValueError("policies[adaptive]: `predictor` (a scale predictor checkpoint) is required")
    return AdaptivePolicy(context.detector, context.predictor(o.predictor), _options_resampler(o, context, "adaptive"),
                          o.knob, o.name)


@dataclass
class CascadeOptions(PolicyOptions):
    low: int = 512
    high: int | None = None  # a fixed second-pass short side, or None with `predictor` for a predicted one
    predictor: str | None = None
    knob: float | None = None
    max_size: int = 1333
    score: str = "low_confidence"
    threshold: float = 0.5
    score_args: dict[str, Any] = field(default_factory=dict)  # top_k, band, tiny_side, confident: pipeline.uncertainty


@register_policy("cascade")
def build_cascade(entry: dict, context: PolicyContext) -> CascadePolicy:
    o = from_dict(CascadeOptions, entry, prefix="policies[cascade].")
    predictor = context.predictor(o.predictor) if o.predictor else None
    return CascadePolicy(context.detector, o.low, o.high, o.max_size, o.score, o.threshold,
                         _options_resampler(o, context, "cascade"), predictor, o.knob, o.score_args, o.name)


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
    return OraclePolicy(context.detector, context.dataset, o.short_sides, o.max_size,
                        _options_resampler(o, context, "oracle"), o.lam, o.name)
