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
  Both include what was resident before the call (model weights, the input). Resetting either peak is visible to
  the whole process, so a host application's own peak readings move too; :func:`measuring` turns it off.

What is measured is set per thread by :func:`measuring` (all of it by default, as ``ardet eval`` needs); each thread
keeps its own costs, so one policy may serve several threads (peak memory is the process's, shared by them).
"""
from __future__ import annotations

import contextlib
import resource
import threading
import time
from collections import defaultdict
from typing import Any, Callable, Iterator

import torch

from ardet.flops import FlopCount, count_flops

STAGES = ("predictor", "resample", "detector")
_SETTINGS = threading.local()


def _settings() -> tuple[bool, bool]:
    return getattr(_SETTINGS, "value", (True, True))  # (flops, memory)


@contextlib.contextmanager
def measuring(flops: bool = True, memory: bool = True) -> Iterator[None]:
    """What :class:`CostMeter` measures in this thread inside the block (time always): ``flops=False`` skips the
    counted forward that each new input shape costs (results carry no FLOPs); ``memory=False`` leaves the process's
    and CUDA's peak-memory statistics alone (results carry no peak memory)."""
    saved = _settings()
    _SETTINGS.value = (flops, memory)
    try:
        yield
    finally:
        _SETTINGS.value = saved


class CostMeter:
    """Runs and measures the stage calls of one policy; :meth:`take` hands over one image's costs and starts afresh.

    ``policy_result = ImageResult(detections, size, factor, resampler, **meter.take())``
    """

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self._counts: dict[tuple, FlopCount] = {}  # shared by the threads: a count depends on shapes only
        self._local = threading.local()

    def reset(self) -> None:
        """Forget this thread's costs measured since the last :meth:`take` (those of a call that raised, say)."""
        self._local.costs = _Costs()

    @property
    def _costs(self) -> "_Costs":
        if not hasattr(self._local, "costs"):
            self.reset()
        return self._local.costs

    def measure(self, stage: str, fn: Callable, *args: Any, flops_key: Any = None, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, measured as ``stage``. Several calls of one stage in an image add up.

        ``flops_key``: what the stage's FLOPs depend on, when that is less than all the arguments (e.g. the
        detector's input shape, not the original size it maps boxes back to); it widens the shape cache's reuse.
        """
        flops, memory = _settings()
        costs = self._costs
        if flops:
            owner = getattr(fn, "__self__", fn)  # a bound method: the object, so two detectors never share counts
            key = (stage, getattr(fn, "__qualname__", repr(fn)), id(owner),
                   _signature((args, kwargs)) if flops_key is None else ("key", flops_key))
            counted = key not in self._counts
            if counted:
                _, self._counts[key] = count_flops(fn, *args, **kwargs)
            costs.flops[stage] += self._counts[key].flops
            costs.uncounted.update(self._counts[key].uncounted_ops)
            if counted or stage not in costs.source:
                costs.source[stage] = "counted" if counted else "shape-cache"
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            if memory:
                torch.cuda.reset_peak_memory_stats(self.device)
        elif memory:
            _reset_cpu_peak()
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        if cuda:
            torch.cuda.synchronize(self.device)
        costs.seconds[stage] += time.perf_counter() - start
        if memory:
            peak = torch.cuda.max_memory_allocated(self.device) if cuda else _cpu_peak_bytes()
            costs.memory[stage] = max(costs.memory.get(stage, 0), int(peak))
        return result

    def take(self) -> dict[str, Any]:
        """The costs measured since the last ``take`` as :class:`eval.ImageResult` keyword arguments; then reset.

        Every stage in :data:`STAGES` is present (0 FLOPs and 0 s for a stage the policy did not run); ``flops`` is
        empty where :func:`measuring` turned counting off.
        """
        flops, _ = _settings()
        c = self._costs
        out = {"flops": {s: int(c.flops.get(s, 0)) for s in (*STAGES, *c.flops)} if flops else {},
               "seconds": {s: float(c.seconds.get(s, 0.0)) for s in (*STAGES, *c.seconds)},
               "flops_source": dict(c.source), "peak_memory_bytes": dict(c.memory),
               "uncounted_ops": tuple(sorted(c.uncounted))}
        self.reset()
        return out


class _Costs:
    """One thread's costs since the last :meth:`CostMeter.take`."""

    def __init__(self):
        self.flops: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self.source: dict[str, str] = {}
        self.memory: dict[str, int] = {}
        self.uncounted: set[str] = set()


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
