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


def resample(x: torch.Tensor, size: tuple[int, int], model=None, mode: str = "bilinear") -> torch.Tensor:
    """LIIF ``model`` where the target is larger than the input on at least one axis and a model is given;
    otherwise :func:`resize` (factors <= 1 are antialiased interpolation, not LIIF)."""
    if model is not None and (size[0] > x.shape[-2] or size[1] > x.shape[-1]):
        return model.upscale(x, size)
    return resize(x, size, mode)
