"""What the harness asks of a policy, and what a policy returns for one image."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ardet.images import LoadedImage

if TYPE_CHECKING:
    from detector import Detections


@dataclass(frozen=True)
class ImageResult:
    """One image through one policy.

    ``size``: the (H, W) the detector received; ``factor``: the scale chosen (H/h, up to rounding); ``resampler``:
    what rendered it ("none" when the size did not change). ``flops`` (2 per multiply-add) and ``seconds`` per stage
    ("predictor", "resample", "detector"), as :class:`eval.CostMeter` measures them; ``extra``: anything JSON-able a
    policy wants kept in the record (a cascade's second pass, oracle marks).
    """

    detections: "Detections"
    size: tuple[int, int]
    factor: float
    resampler: str
    flops: dict[str, int]
    seconds: dict[str, float]
    extra: dict = field(default_factory=dict)
    flops_source: dict[str, str] = field(default_factory=dict)  # stage -> "counted" | "shape-cache"
    peak_memory_bytes: dict[str, int] = field(default_factory=dict)
    uncounted_ops: tuple[str, ...] = ()  # compute ops that ran but have no FLOP formula (element-wise, norms, ...)


POLICY_TRAITS = ("adaptive", "reference")  # optional boolean attributes of a policy, kept in summary.json


@runtime_checkable
class Policy(Protocol):
    """Chooses each image's input size and resampler, runs the stages, and reports detections and costs.

    A policy may also set ``adaptive = True`` (it picks sizes by image content; reports histogram its factors) and
    ``reference = True`` (it needs the ground truth, like the oracle: an upper bound that reports draw apart and
    keep off the Pareto fronts of deployable policies).
    """

    name: str

    def __call__(self, image: LoadedImage) -> ImageResult: ...
