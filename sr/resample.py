"""Resizing without a model (torch interpolate) and the stage entry point that picks LIIF or interpolation."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """[B, 3, h, w] -> [B, 3, H, W]: align_corners=False, antialiased when an axis shrinks; bicubic is clamped to
    [0, 1] (its overshoot would leave the image range)."""
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"resize mode must be 'bilinear' or 'bicubic', got {mode!r}")
    size = (int(size[0]), int(size[1]))
    if min(size) <= 0:
        raise ValueError(f"output size must be positive, got {size}")
    shrinks = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    y = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=shrinks)
    return y.clamp(0, 1) if mode == "bicubic" else y


def uses_model(in_size: tuple[int, int], size: tuple[int, int], min_factor: float = 1.0) -> bool:
    """Whether :func:`resample` renders ``in_size`` -> ``size`` with its model: the target exceeds ``min_factor`` times
    the input on at least one axis."""
    return size[0] > in_size[0] * min_factor or size[1] > in_size[1] * min_factor


def resample(x: torch.Tensor, size: tuple[int, int], model=None, mode: str = "bilinear",
             min_factor: float = 1.0) -> torch.Tensor:
    """LIIF ``model`` where a model is given and :func:`uses_model` (by default: the image grows on an axis);
    otherwise :func:`resize`. Factors <= 1 are always antialiased interpolation; ``min_factor`` > 1 keeps the model,
    which costs per output pixel 100-10,000x what interpolation does, for the enlargements where it matters most."""
    if model is not None and uses_model(x.shape[-2:], size, min_factor):
        return model.upscale(x, size)
    return resize(x, size, mode)
