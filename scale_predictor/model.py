"""The scale predictor: thumbnail + native size (+ optional trade-off knob) -> one target short side per image.

Output convention (the one every caller relies on):
- The network emits a logit ``z``; ``u = sigmoid(z)`` in (0, 1) places the prediction in a log-space range:
  ``log v = log lo + u * (log hi - log lo)``, where ``v`` is the target short side S in pixels (``output="short_side"``)
  or the factor relative to the native short side (``output="factor"``, then S = v * native short side).
  A bounded sigmoid cannot leave the range, and a non-finite logit is mapped to the range's middle: non-finite sizes
  are impossible by construction.
- :func:`target_size` turns the continuous S into the integer size handed to the resampler: S rounded to a multiple
  of ``multiple``, the long side following the aspect ratio (truncated, as DetrImageProcessor does) and capped at
  ``max_long``. ``factor = S / native short side``.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import nn

from ardet.images import IMAGENET_MEAN, IMAGENET_STD, check_pixels

SIZE_REF = 512.0  # native sizes enter the head as log(h / 512), log(w / 512): order-one numbers for COCO-like images


@dataclass(frozen=True)
class ScaleDecision:
    """One image's predicted input size. ``size`` = (H, W) to resample to; ``short_side`` = min(H, W) (a multiple of
    the model's ``multiple`` unless the aspect ratio is too extreme for ``max_long``); ``factor`` = short_side / native
    short side; ``raw_short_side`` = the continuous prediction before rounding and clamping."""

    short_side: int
    size: tuple[int, int]
    factor: float
    native_size: tuple[int, int]
    raw_short_side: float
    knob: float | None = None


def target_size(native_size: tuple[int, int], short_side: float, *, multiple: int = 32,
                max_long: int = 2048) -> tuple[int, int]:
    """(H, W) for a requested short side: S rounded to ``multiple`` (at least one multiple), the long side
    ``int(S * long / short)`` capped at ``max_long`` (S shrinks to the largest multiple that fits; if not even one
    multiple fits, the largest S >= 1 that does)."""
    h, w = (max(1, int(v)) for v in native_size)
    short, long = min(h, w), max(h, w)
    if not math.isfinite(short_side):
        raise ValueError(f"short side must be finite, got {short_side}")
    s = max(multiple, multiple * round(short_side / multiple))
    if int(s * long / short) > max_long:
        # The largest short side whose long side int(S * long / short) fits: int() truncates, so S may pass
        # max_long * short / long by up to short / long; start just above that and step down.
        fitting = int((max_long + 1) * short / long)
        while fitting > 1 and int(fitting * long / short) > max_long:
            fitting -= 1
        s = fitting // multiple * multiple if fitting >= multiple else max(1, fitting)
    length = min(max_long, max(1, int(s * long / short)))
    return (s, length) if h <= w else (length, s)


def make_thumbnail(pixels: torch.Tensor, side: int = 224) -> torch.Tensor:
    """The predictor's input: the whole image resized to ``side x side`` (antialiased when shrinking).

    Squaring lets thumbnails of any aspect batch together; the aspect ratio and the absolute size reach the head
    through the native size instead. Accepts [3,h,w] or [B,3,h,w] in [0, 1]; any size from 1x1 up.
    """
    from sr import resize  # the project's one resize: antialiased where an axis shrinks

    x = pixels if pixels.ndim == 4 else pixels.unsqueeze(0)
    out = resize(x.float(), (side, side), mode="bilinear").clamp(0.0, 1.0)
    return out if pixels.ndim == 4 else out[0]


class ScalePredictor(nn.Module):
    """timm backbone (random init unless ``backbone_weights`` is a local file) -> pooled features -> an MLP head
    conditioned on the native size (and the knob, if ``knob=True``) -> one logit per image."""

    def __init__(self, backbone: str = "mobilenetv3_small_100", *, stage: int | None = None, thumb: int = 224,
                 output: Literal["short_side", "factor"] = "short_side", range: tuple[float, float] = (320.0, 1344.0),
                 multiple: int = 32, max_long: int = 2048, hidden: int = 128, knob: bool = False,
                 default_knob: float = 0.5, backbone_weights: str | None = None):
        super().__init__()
        import timm

        lo, hi = (float(v) for v in range)
        if output not in ("short_side", "factor"):
            raise ValueError(f"output must be 'short_side' or 'factor', got {output!r}")
        if not (0 < lo < hi and math.isfinite(hi)):
            raise ValueError(f"range must satisfy 0 < lo < hi, got {range}")
        if multiple < 1 or max_long < multiple:
            raise ValueError(f"need 1 <= multiple <= max_long, got multiple={multiple}, max_long={max_long}")
        if not 0.0 <= default_knob <= 1.0:
            raise ValueError(f"default_knob must lie in [0, 1], got {default_knob}")
        self.output, self.lo, self.hi, self.multiple, self.max_long = output, lo, hi, int(multiple), int(max_long)
        self.thumb, self.use_knob, self.default_knob = int(thumb), bool(knob), float(default_knob)

        kwargs = dict(pretrained=backbone_weights is not None)
        if backbone_weights is not None:  # local file only: nothing is downloaded
            kwargs["pretrained_cfg_overlay"] = dict(file=str(backbone_weights))
        if stage is None:  # the whole network with timm's global pooling
            self.backbone = timm.create_model(backbone, num_classes=0, **kwargs)
            channels = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        else:  # truncated at one stage (as DyRA stops ResNet-18 at res4), pooled here
            self.backbone = timm.create_model(backbone, features_only=True, out_indices=(stage,), **kwargs)
            channels = self.backbone.feature_info.channels()[-1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.image_proj = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, hidden))
        # FiLM: the size (and knob) scale and shift the image features, so "how much to scale" can depend on both
        self.cond_proj = nn.Sequential(nn.Linear(3 if knob else 2, hidden), nn.GELU(), nn.Linear(hidden, 2 * hidden))
        self.head = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.head[-1].weight)  # start in the middle of the log range for every image
        nn.init.zeros_(self.head[-1].bias)

    # -- the differentiable part -------------------------------------------------------------------------------
    def forward(self, thumbs: torch.Tensor, native_sizes: torch.Tensor, knob: torch.Tensor | None = None) -> torch.Tensor:
        """u in (0, 1), [B]: the prediction's position in the log range. ``native_sizes`` [B, 2] = (h, w) pixels;
        ``knob`` [B] in [0, 1] (used only by knob-conditioned models; None means ``default_knob``)."""
        feats = self.backbone((thumbs - self.mean) / self.std)
        if isinstance(feats, (list, tuple)):  # features_only
            feats = feats[-1].mean(dim=(-2, -1))
        cond = torch.log(native_sizes.to(feats).clamp(min=1.0) / SIZE_REF)
        if self.use_knob:
            if knob is None:
                knob = torch.full((len(thumbs),), self.default_knob, device=feats.device)
            cond = torch.cat([cond, knob.to(cond).view(-1, 1)], dim=1)
        scale, shift = self.cond_proj(cond).chunk(2, dim=-1)
        z = self.head(self.image_proj(feats) * (1.0 + scale) + shift).squeeze(-1)
        return torch.sigmoid(torch.nan_to_num(z, nan=0.0, posinf=30.0, neginf=-30.0))

    def short_side(self, u: torch.Tensor, native_sizes: torch.Tensor) -> torch.Tensor:
        """Continuous target short side S (pixels) for positions u."""
        value = torch.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo)))
        return value if self.output == "short_side" else value * native_sizes.min(dim=-1).values.to(value)

    def position(self, short_sides: torch.Tensor, native_sizes: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`short_side`: u of given short sides (clamped to the range), e.g. oracle labels."""
        native_short = native_sizes.min(dim=-1).values.view(-1, *[1] * (short_sides.ndim - 1))  # [B] or [B, K]
        value = short_sides if self.output == "short_side" else short_sides / native_short
        u = (torch.log(value.clamp(min=1e-6)) - math.log(self.lo)) / (math.log(self.hi) - math.log(self.lo))
        return u.clamp(0.0, 1.0)

    # -- inference ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor | Sequence[torch.Tensor], native_sizes: Sequence[tuple[int, int]] | None = None,
                knob: float | None = None) -> list[ScaleDecision]:
        """Decisions for a batch. ``images``: thumbnails [B,3,t,t] at the model's ``thumb`` size (then ``native_sizes``
        is required) or full images ([3,h,w] each or a [B,3,h,w] batch, any size; thumbnails are made here and native
        sizes default to the images' sizes)."""
        is_thumbs = isinstance(images, torch.Tensor) and images.ndim == 4 and tuple(images.shape[-2:]) == (self.thumb,) * 2
        if is_thumbs and native_sizes is not None:
            check_pixels(images, 4, "ScalePredictor.predict")
            thumbs = images
        else:
            images = [images] if isinstance(images, torch.Tensor) and images.ndim == 3 else list(images)
            if not images:  # as detect() and upscale() take an empty batch
                return []
            for im in images:
                check_pixels(im, 3, "ScalePredictor.predict")
            native_sizes = native_sizes or [tuple(im.shape[-2:]) for im in images]
            thumbs = torch.stack([make_thumbnail(im, self.thumb) for im in images])
        if len(native_sizes) != len(thumbs):
            raise ValueError(f"{len(thumbs)} images but {len(native_sizes)} native sizes")
        if not torch.isfinite(thumbs).all():
            raise ValueError("thumbnails contain NaN or infinity")
        sizes = torch.tensor([[int(h), int(w)] for h, w in native_sizes], dtype=torch.float32)
        if (sizes < 1).any():
            raise ValueError(f"native sizes must be >= 1 pixel, got {native_sizes}")
        if knob is not None and not 0.0 <= knob <= 1.0:
            raise ValueError(f"knob must lie in [0, 1], got {knob}")
        if knob is not None and not self.use_knob:  # ignoring it would label identical runs as a trade-off curve
            raise ValueError("this predictor was trained without a knob; pass knob=None")
        device = self.mean.device
        knobs = None if knob is None else torch.full((len(thumbs),), float(knob), device=device)
        with self._evaluating():
            on_device = sizes.to(device)
            raw = self.short_side(self(thumbs.to(device, torch.float32), on_device, knobs), on_device).cpu()
        if not torch.isfinite(raw).all():  # unreachable by construction; a bug if it ever fires
            raise RuntimeError(f"scale predictor produced non-finite sizes {raw.tolist()}")
        used_knob = (self.default_knob if knob is None else float(knob)) if self.use_knob else None
        return [self.decide(tuple(int(v) for v in hw), float(s), used_knob) for hw, s in zip(sizes.tolist(), raw.tolist())]

    def decide(self, native_size: tuple[int, int], raw_short_side: float, knob: float | None = None) -> ScaleDecision:
        """Round and clamp a continuous short side into a :class:`ScaleDecision` (range first, then the multiple)."""
        native_short = min(native_size)
        lo, hi = (self.lo, self.hi) if self.output == "short_side" else (self.lo * native_short, self.hi * native_short)
        m = self.multiple
        s = min(max(raw_short_side, math.ceil(lo / m) * m), max(m, math.floor(hi / m) * m))
        size = target_size(native_size, s, multiple=m, max_long=self.max_long)
        return ScaleDecision(short_side=min(size), size=size, factor=min(size) / native_short,
                             native_size=tuple(native_size), raw_short_side=raw_short_side, knob=knob)

    def flops(self, batch: int = 1):
        """:class:`ardet.flops.FlopCount` of one forward at the model's thumbnail size."""
        from ardet.flops import count_flops

        with self._evaluating(), torch.no_grad():
            device = self.mean.device
            _, count = count_flops(self, torch.rand(batch, 3, self.thumb, self.thumb, device=device),
                                   torch.full((batch, 2), 480.0, device=device),
                                   torch.full((batch,), self.default_knob, device=device))
        return count

    @contextlib.contextmanager
    def _evaluating(self):
        """Eval mode inside the block (BatchNorm statistics, no dropout), the caller's mode restored after it; a model
        already in eval mode is left alone (switching walks every module: a sixth of a predict call)."""
        if not self.training:
            yield
            return
        self.eval()
        try:
            yield
        finally:
            self.train()
