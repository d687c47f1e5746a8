"""Resizing without a model (torch interpolate) and the stage entry point that picks LIIF or interpolation:
:func:`resample` for one call, :class:`Resampler` for a configured choice that a policy or a run keeps."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ardet.images import DEFAULT_MAX_PIXELS, check_pixels


# The largest output rendered: the largest image ardet.images reads (Pillow's decompression-bomb limit), so a wild
# size or scale is one clear error instead of an allocation failure deep inside torch.
MAX_OUTPUT_PIXELS = DEFAULT_MAX_PIXELS


def check_size(size) -> tuple[int, int]:
    """``size`` as (H, W) after checking it is two positive integers of at most MAX_OUTPUT_PIXELS pixels."""
    if not (isinstance(size, (tuple, list, torch.Size)) and len(size) == 2):
        raise ValueError(f"output size must be (H, W), got {size!r}")
    H, W = (int(s) for s in size)
    if H <= 0 or W <= 0 or (H, W) != tuple(size):
        raise ValueError(f"output size must be two positive integers, got {size!r}")
    if H * W > MAX_OUTPUT_PIXELS:
        raise ValueError(f"output size {H}x{W} = {H * W:,} pixels exceeds the limit of {MAX_OUTPUT_PIXELS:,}")
    return H, W


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """[B, 3, h, w] -> [B, 3, H, W]: align_corners=False, antialiased when an axis shrinks; bicubic is clamped to
    [0, 1] (its overshoot would leave the image range)."""
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"resize mode must be 'bilinear' or 'bicubic', got {mode!r}")
    check_pixels(x, 4, "sr.resize")
    size = check_size(size)
    shrinks = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    # float32 arithmetic for half-precision input: the CPU has no half antialiased kernels, and it rounds less
    half = x.dtype in (torch.float16, torch.bfloat16)
    y = F.interpolate(x.float() if half else x, size=size, mode=mode, align_corners=False, antialias=shrinks)
    y = y.to(x.dtype)
    return y.clamp(0, 1) if mode == "bicubic" else y


def uses_model(in_size: tuple[int, int], size: tuple[int, int], min_factor: float = 1.0) -> bool:
    """Whether :func:`resample` renders ``in_size`` -> ``size`` with its model: the target exceeds ``min_factor`` times
    the input on at least one axis."""
    return size[0] > in_size[0] * min_factor or size[1] > in_size[1] * min_factor


def resample(x: torch.Tensor, size: tuple[int, int], model=None, mode: str = "bilinear",
             min_factor: float = 1.0, tile: int | None = 512) -> torch.Tensor:
    """LIIF ``model`` where a model is given and :func:`uses_model` (by default: the image grows on an axis);
    otherwise :func:`resize`. Factors <= 1 are always antialiased interpolation, also on the one axis that shrinks
    while the other grows (the model renders it at its input length first); ``min_factor`` > 1 keeps the model,
    which costs per output pixel 100-10,000x what interpolation does, for the enlargements where it matters most.
    ``tile``: :meth:`LIIF.upscale`'s encoder tile."""
    if model is not None and uses_model(x.shape[-2:], size, min_factor):
        grown = (max(size[0], x.shape[-2]), max(size[1], x.shape[-1]))
        y = model.upscale(x, grown, tile=tile)
        return y if grown == tuple(size) else resize(y, size, mode)
    return resize(x, size, mode)


@dataclass(frozen=True)
class Resampler:
    """How images are rendered at a new size: ``mode`` ``bilinear`` or ``bicubic`` interpolation (antialiased where it
    shrinks), or ``liif``: ``model`` where the image grows on an axis by more than ``min_factor``, bilinear otherwise.
    ``resampler(x, size)`` renders; :meth:`method` says which of them renders a given change of size."""

    mode: str = "bilinear"
    model: torch.nn.Module | None = None
    min_factor: float = 1.0

    MODES = ("bilinear", "bicubic", "liif")

    def __post_init__(self):
        if self.mode not in self.MODES:
            raise ValueError(f"resampler must be one of {', '.join(self.MODES)}, got {self.mode!r}")
        if (self.mode == "liif") != (self.model is not None):
            raise ValueError("resampler 'liif' needs an SR model, and only it takes one")
        if not (math.isfinite(self.min_factor) and self.min_factor >= 1):
            raise ValueError(f"sr_min_factor must be a number >= 1, got {self.min_factor}")
        if self.min_factor != 1 and self.mode != "liif":
            raise ValueError(f"sr_min_factor only applies to resampler 'liif', not {self.mode!r}")

    @property
    def interpolation(self) -> str:
        """What renders where the model does not."""
        return "bilinear" if self.mode == "liif" else self.mode

    def method(self, in_size: tuple[int, int], size: tuple[int, int]) -> str:
        """What renders ``in_size`` -> ``size``: "liif", the interpolation, or "none" when the size is unchanged."""
        if tuple(size) == tuple(in_size):
            return "none"
        return "liif" if self.model is not None and uses_model(in_size, size, self.min_factor) else self.interpolation

    def __call__(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.method(x.shape[-2:], size) == "none":  # no work, and no cost charged for it
            return x
        return resample(x, size, self.model, self.interpolation, self.min_factor)
