"""Training losses of the scale predictor. All act on u in (0, 1), the prediction's position in its log range.

Elastic-style (our reconstruction of Elastic-DETR from DyRA's public code; see docs/scale-predictor.md):
- :func:`scale_loss`: per ground-truth box, the probability that it needs upscaling, P_up, from its area at the
  predicted scale (the factor is detached: the resize is not differentiable), is the BCE target for u; losses are
  averaged within area bins and the bin means summed, so a crowd of one size cannot drown the others.
- :func:`distribution_loss`: the 1-D Wasserstein-1 distance between the batch's u (sorted) and the mid-point quantiles
  of a Beta target whose mean sets the overall degree of scaling.
AdaScale-style (oracle labels from a frozen detector): :func:`oracle_loss` towards the best candidate size or the
soft target's mean position.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

COCO_SMALL, COCO_LARGE = 32.0 ** 2, 96.0 ** 2


def upscale_probability(areas: torch.Tensor, *, lo: float = COCO_SMALL, hi: float = COCO_LARGE, gain: float = 1.0,
                        span: float = 6.0) -> torch.Tensor:
    """P_up = sigmoid(-x), x the linear map of [lo * gain, hi * gain] onto [-span, span] (DyRA's map_range):
    about 1 for boxes well under ``lo``, 0.5 at the middle of the interval, about 0 well over ``hi``."""
    lo, hi = lo * gain, hi * gain
    x = -span + 2.0 * span * (areas - lo) / (hi - lo)
    return torch.sigmoid(-x)


def scale_loss(u: torch.Tensor, factors: torch.Tensor, boxes: Sequence[torch.Tensor], *,
               bins: Sequence[float] = (32.0 ** 2, 64.0 ** 2), lo: float = COCO_SMALL, hi: float = COCO_LARGE,
               gain: float = 1.0) -> torch.Tensor:
    """Binned BCE between u and P_up of each box at its scaled area.

    ``u`` [B]; ``factors`` [B], the scale each image would be resized by (detached here); ``boxes[i]`` [N_i, 4] COCO
    xywh in the pixels the factor applies to. Per image: BCE(u_i, P_up(w h f_i^2)) per box, mean within each non-empty
    area bin (edges ``bins`` on the scaled area), bin means summed; then the mean over images that have boxes.
    Images without boxes contribute nothing; a batch without any box gives 0 (still attached to the graph).
    """
    edges = torch.tensor([0.0, *bins, float("inf")])
    per_image = []
    for ui, fi, b in zip(u, factors.detach(), boxes):
        if len(b) == 0:
            continue
        areas = (b[:, 2] * b[:, 3]).to(u) * fi ** 2
        target = upscale_probability(areas, lo=lo, hi=hi, gain=gain)
        bce = F.binary_cross_entropy(ui.expand_as(target), target, reduction="none")
        which = torch.bucketize(areas, edges.to(areas), right=True) - 1
        per_image.append(sum(bce[which == k].mean() for k in which.unique()))
    return torch.stack(per_image).mean() if per_image else u.sum() * 0.0


def beta_quantiles(mean: float, concentration: float, n: int) -> torch.Tensor:
    """Mid-point quantiles F^-1((i + 1/2) / n), i < n, of Beta(mean * c, (1 - mean) * c)."""
    from scipy.special import betaincinv

    if not 0.0 < mean < 1.0 or concentration <= 0:
        raise ValueError(f"Beta target needs 0 < mean < 1 and concentration > 0, got {mean}, {concentration}")
    q = (np.arange(n) + 0.5) / n
    return torch.from_numpy(betaincinv(mean * concentration, (1.0 - mean) * concentration, q)).float()


def distribution_loss(u: torch.Tensor, mean: float, concentration: float = 8.0) -> torch.Tensor:
    """W1 between the empirical distribution of the batch's u and Beta(mean * c, (1 - mean) * c), the target
    represented by its n mid-point quantiles (n = batch size): mean |sort(u)_i - q_i|."""
    return (torch.sort(u).values - beta_quantiles(mean, concentration, len(u)).to(u)).abs().mean()


def beta_mean_from_localisation(loss_small: float, loss_large: float) -> float:
    """Target mean of u from the detector's localisation losses on small and large objects at native scale:
    ``loss_small / (loss_small + loss_large)``. Balanced -> 0.5 (the middle of the log range); small objects
    localised worse -> above 0.5 (scale up overall), as DyRA's balance loss moves its size threshold."""
    if loss_small < 0 or loss_large < 0 or loss_small + loss_large <= 0:
        raise ValueError(f"localisation losses must be >= 0 and not both 0, got {loss_small}, {loss_large}")
    return float(np.clip(loss_small / (loss_small + loss_large), 0.01, 0.99))


def oracle_loss(u: torch.Tensor, target_u: torch.Tensor) -> torch.Tensor:
    """Regression on the log size, as a cross-entropy: BCE(u, u*) is minimal at u = u* and its gradient in the logit
    is u - u*, so a saturated sigmoid still learns (a squared error on u would stall there). ``target_u`` is the
    oracle's best candidate, or the candidates' positions averaged under the soft target."""
    return F.binary_cross_entropy(u, target_u.to(u).clamp(0.0, 1.0))
