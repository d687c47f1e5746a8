"""Honest compute accounting: one mechanism every policy uses to run and measure its stages.

For each stage call, :meth:`CostMeter.measure`
- counts FLOPs with :func:`ardet.flops.count_flops` on the very arguments the stage receives (batch 1, no padding),
  once per distinct input signature (tensor shapes and dtypes plus the other arguments, or an explicit ``flops_key``):
  convolutional and DETR-style networks do the same arithmetic for the same shapes, so later calls reuse the count
  and the record says ``"shape-cache"`` instead of ``"counted"``;
- times the un-instrumented call with ``time.perf_counter`` (device synchronised); the counted call of a new
  signature runs first, so every timed call is a warm one;
- records peak memory over the call: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the process's peak
  resident set size during the call (Linux: VmHWM, reset to the current size just before it), or where that reset is
  unavailable the process's high-water mark since it started (``ru_maxrss``), which earlier stages and images raise.
  Both include what was resident before the call (model weights, the input).
"""
from __future__ import annotations

import resource
import time
from collections import defaultdict
from typing import Any, Callable

import torch

from ardet.flops import FlopCount, count_flops

STAGES = ("predictor", "resample", "detector")


class CostMeter:
    """Runs and measures the stage calls of one policy; :meth:`take` hands over one image's costs and starts afresh.

    ``policy_result = ImageResult(detections, size, factor, resampler, **meter.take())``
    """

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self._counts: dict[tuple, FlopCount] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the costs measured since the last :meth:`take` (those of a call that raised, say)."""
        self._flops: dict[str, int] = defaultdict(int)
        self._seconds: dict[str, float] = defaultdict(float)
        self._source: dict[str, str] = {}
        self._memory: dict[str, int] = {}
        self._uncounted: set[str] = set()

    def measure(self, stage: str, fn: Callable, *args: Any, flops_key: Any = None, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, measured as ``stage``. Several calls of one stage in an image add up.

        ``flops_key``: what the stage's FLOPs depend on, when that is less than all the arguments (e.g. the
        detector's input shape, not the original size it maps boxes back to); it widens the shape cache's reuse.
        """
        owner = getattr(fn, "__self__", fn)  # a bound method: the object, so two detectors never share counts
        key = (stage, getattr(fn, "__qualname__", repr(fn)), id(owner),
               _signature((args, kwargs)) if flops_key is None else ("key", flops_key))
        counted = key not in self._counts
        if counted:
            _, self._counts[key] = count_flops(fn, *args, **kwargs)
        count = self._counts[key]
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_cpu_peak()
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize(self.device)
        self._seconds[stage] += time.perf_counter() - start
        self._flops[stage] += count.flops
        self._uncounted.update(count.uncounted_ops)
        if counted or stage not in self._source:
            self._source[stage] = "counted" if counted else "shape-cache"
        memory = torch.cuda.max_memory_allocated(self.device) if cuda else _cpu_peak_bytes()
        self._memory[stage] = max(self._memory.get(stage, 0), int(memory))
        return result

    def take(self) -> dict[str, Any]:
        """The costs measured since the last ``take`` as :class:`eval.ImageResult` keyword arguments; then reset.

        Every stage in :data:`STAGES` is present (0 FLOPs and 0 s for a stage the policy did not run).
        """
        out = {"flops": {s: int(self._flops.get(s, 0)) for s in (*STAGES, *self._flops)},
               "seconds": {s: float(self._seconds.get(s, 0.0)) for s in (*STAGES, *self._seconds)},
               "flops_source": dict(self._source), "peak_memory_bytes": dict(self._memory),
               "uncounted_ops": tuple(sorted(self._uncounted))}
        self.reset()
        return out


def _reset_cpu_peak() -> None:
    """Linux: set the process's peak RSS (VmHWM) to its current RSS, so the next reading is this call's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux, or not allowed: _cpu_peak_bytes falls back to the whole run's high-water mark
        pass


def _cpu_peak_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))  # KiB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux units (KiB); bytes on macOS


def _signature(value: Any) -> Any:
    """A hashable description of call arguments: tensors by shape, dtype and device, containers recursively."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), str(value.dtype), str(value.device))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_signature(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _signature(v)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))))
    if isinstance(value, torch.nn.Module):
        return ("module", id(value))
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)
