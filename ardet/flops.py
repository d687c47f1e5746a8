"""FLOPs of any callable, measured with torch's FlopCounterMode on the tensors it actually receives.

FlopCounterMode counts matmuls and convolutions (2 FLOPs per multiply-add) but counts 0 for CPU
scaled-dot-product attention, ``grid_sample`` and interpolation. We count those with the formulas below (torch's own
for attention; interpolation by its taps: 4 multiply-adds per output value bilinear, 16 bicubic, and when an
antialiased resize shrinks, ceil(2s) or ceil(4s) per pass for a factor s), so attention on CPU, LIIF's sampling and
every resize are in the total. Other arithmetic that ran and was not counted (element-wise math, norms, softmax) is
listed by name in :attr:`FlopCount.uncounted_ops`; data movement and selection or comparison ops (``_NOT_LISTED``:
views, copies, clamp, abs, max, where, sort, ...) are neither counted nor listed.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

aten = torch.ops.aten


def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _interp_flops(taps: int) -> Callable:
    """Fixed-support interpolation (no antialias): ``taps`` multiply-adds per output element."""
    def formula(x, *args, out_shape=None, **kwargs) -> int:
        return 2 * taps * math.prod(out_shape)
    return formula


def _aa_flops(support: float) -> Callable:
    """Antialiased resize, done separably by torch (width pass, then height pass); taps widen when shrinking."""
    def formula(x, *args, out_shape=None, **kwargs) -> int:
        n, c, h_in, w_in = x
        h_out, w_out = out_shape[-2:]
        taps_w = math.ceil(support * max(1.0, w_in / w_out))
        taps_h = math.ceil(support * max(1.0, h_in / h_out))
        return 2 * n * c * (h_in * w_out * taps_w + h_out * w_out * taps_h)
    return formula


def _grid_sample_flops(x, grid, mode, *args, out_shape=None, **kwargs) -> int:
    taps = {0: 4, 1: 0, 2: 16}[int(mode)]  # bilinear, nearest, bicubic
    return 2 * taps * math.prod(out_shape)


EXTRA_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
    aten.upsample_bilinear2d: _interp_flops(4),
    aten.upsample_bicubic2d: _interp_flops(16),
    aten.upsample_nearest2d: _interp_flops(0),
    aten._upsample_bilinear2d_aa: _aa_flops(2.0),
    aten._upsample_bicubic2d_aa: _aa_flops(4.0),
    aten.grid_sampler_2d: _grid_sample_flops,
}

# Ops that move, create, select or compare data (at most one cheap operation per element): not listed as "uncounted".
_NOT_LISTED = {
    "view", "_unsafe_view", "reshape", "permute", "expand", "t", "transpose", "clone", "copy_", "_to_copy", "cat",
    "stack", "slice", "select", "index", "index_select", "gather", "unsqueeze", "squeeze", "detach", "empty",
    "empty_like", "zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "fill_", "zero_", "as_strided",
    "contiguous", "alias", "lift_fresh", "arange", "linspace", "split", "split_with_sizes", "unbind", "flip",
    "constant_pad_nd", "new_zeros", "new_ones", "new_empty", "new_empty_strided", "empty_strided", "_local_scalar_dense",
    "unfold", "im2col", "repeat", "roll", "scalar_tensor", "masked_fill", "masked_fill_", "where", "nonzero", "topk",
    "sort", "argsort", "max", "min", "argmax", "argmin", "eq", "ne", "lt", "le", "gt", "ge", "logical_and",
    "logical_or", "logical_not", "bitwise_and", "bitwise_or", "bitwise_not", "floor", "ceil", "round", "clamp",
    "clamp_", "clamp_min", "clamp_max", "abs", "sign", "set_", "resize_", "is_nonzero", "item", "_reshape_alias",
    "index_put_", "index_put", "scatter", "scatter_", "narrow", "diagonal", "movedim", "split_with_sizes_copy",
    "_unsafe_index", "rand", "randn", "randint", "uniform_", "normal_", "bernoulli_", "randperm", "upsample_nearest2d_backward", "pad", "copy", "any", "all", "isnan", "isinf", "isfinite",
}


@dataclass(frozen=True)
class FlopCount:
    """FLOPs (2 per multiply-add) of one call, per op, and the compute ops that ran but are not in the count."""

    flops: int
    by_op: dict[str, int] = field(default_factory=dict)
    uncounted_ops: tuple[str, ...] = ()

    @property
    def macs(self) -> float:
        return self.flops / 2

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def __add__(self, other: "FlopCount") -> "FlopCount":
        by_op = Counter(self.by_op)
        by_op.update(other.by_op)
        return FlopCount(self.flops + other.flops, dict(by_op),
                         tuple(sorted(set(self.uncounted_ops) | set(other.uncounted_ops))))


class _OpRecorder(TorchDispatchMode):
    """Sits above FlopCounterMode: counts the ops of :data:`EXTRA_FORMULAS` itself and records every other op.

    Composite ops are decomposed here first, so what is recorded and counted is what really computes. This matters
    under ``torch.inference_mode``, where composite ops (``conv2d``, ``upsample_bilinear2d.vec``,
    ``scaled_dot_product_attention``) arrive undecomposed and FlopCounterMode alone would count a plain upsample as 0.
    """

    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()
        self.extra: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in EXTRA_FORMULAS:
            with _disable_current_modes():  # counted here, so no mode below may count it again
                out = func(*args, **kwargs)
            shapes = tree_map(lambda t: tuple(t.shape) if isinstance(t, torch.Tensor) else t, (args, kwargs))
            first = out[0] if isinstance(out, (tuple, list)) else out
            self.extra[packet.__name__] += int(EXTRA_FORMULAS[packet](*shapes[0], out_shape=tuple(first.shape),
                                                                      **shapes[1]))
            return out
        with self:
            decomposed = func.decompose(*args, **kwargs)
        if decomposed is not NotImplemented:
            return decomposed
        self.ops.add(packet.__name__)
        return func(*args, **kwargs)


def count_flops(fn: Callable, *args: Any, **kwargs: Any) -> tuple[Any, FlopCount]:
    """Run ``fn(*args, **kwargs)`` once under the counter; return its result and the :class:`FlopCount`.

    Works the same inside and outside ``torch.inference_mode`` and ``torch.no_grad``.
    """
    counter = FlopCounterMode(display=False)
    recorder = _OpRecorder()
    with counter, recorder:
        result = fn(*args, **kwargs)
    by_op = Counter({str(op.__name__): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()})
    by_op.update(recorder.extra)
    counted = {op.__name__ for op in counter.flop_registry} | {op.__name__ for op in EXTRA_FORMULAS}
    uncounted = tuple(sorted(recorder.ops - counted - _NOT_LISTED))
    return result, FlopCount(int(sum(by_op.values())), dict(by_op), uncounted)
