"""Per-image scale prediction: which input size should the detector see for this image?

Public surface (timm-like):
- :func:`create_predictor` (name or {name, args}, keyword overrides), :func:`list_predictors`,
  :func:`load_predictor` (a self-describing .safetensors), :func:`save_predictor`.
- ``model.predict(images_or_thumbnails, native_sizes=None, knob=None) -> list[ScaleDecision]``;
  ``model(thumbs, native_sizes, knob) -> u`` in (0, 1) for training; :func:`make_thumbnail`; :func:`target_size`.
- Output convention: target short side S (a multiple of ``multiple``), long side = int(S * long / short) capped at
  ``max_long``; ``factor = S / native short side``. Details in docs/scale-predictor.md.
Training (``ardet train-scale``) lives in :mod:`scale_predictor.train`, losses in :mod:`scale_predictor.losses`,
the detector oracle table in :mod:`scale_predictor.oracle` (its per-image quality and cost rule, which the oracle
policy shares, are exported here).
"""
from scale_predictor.model import ScaleDecision, ScalePredictor, make_thumbnail, target_size
from scale_predictor.oracle import image_quality, oracle_costs
from scale_predictor.registry import create_predictor, list_predictors, load_predictor, save_predictor

__all__ = ["ScaleDecision", "ScalePredictor", "create_predictor", "image_quality", "list_predictors", "load_predictor",
           "make_thumbnail", "oracle_costs", "save_predictor", "target_size"]
