"""Named predictor configurations and self-describing checkpoints (safetensors whose metadata holds {name, args})."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ardet.device import resolve_device
from ardet.files import check_finite_weights, read_json
from scale_predictor.model import ScalePredictor

# Each entry: ScalePredictor arguments. FLOPs at the 224 thumbnail are in docs/scale-predictor.md (with the command).
_PREDICTORS: dict[str, dict[str, Any]] = {
    "mobilenetv3-small": dict(backbone="mobilenetv3_small_100"),
    "mobilenetv3-small-050": dict(backbone="mobilenetv3_small_050"),
    "lcnet-075": dict(backbone="lcnet_075"),
}
DEFAULT_PREDICTOR = "mobilenetv3-small"
SPEC_KEY = "ardet_scale_predictor"  # safetensors metadata key holding the JSON {name, args}
SIDECAR = "predictor.json"


def list_predictors() -> list[str]:
    return sorted(_PREDICTORS)


def create_predictor(name_or_config: str | dict = DEFAULT_PREDICTOR, **kwargs: Any) -> ScalePredictor:
    """``create_predictor("mobilenetv3-small", knob=True)`` or ``create_predictor({"name": ..., "args": {...}})``;
    keyword arguments override the named defaults. The returned model carries ``.spec`` = {name, args} for saving."""
    if isinstance(name_or_config, dict):
        unknown = set(name_or_config) - {"name", "args"}
        if unknown:
            raise ValueError(f"predictor config takes 'name' and 'args', got extra keys {sorted(unknown)}")
        name, kwargs = name_or_config.get("name", DEFAULT_PREDICTOR), {**name_or_config.get("args", {}), **kwargs}
    else:
        name = name_or_config
    if name not in _PREDICTORS:
        raise ValueError(f"unknown scale predictor {name!r}; known: {', '.join(list_predictors())}")
    args = {**_PREDICTORS[name], **kwargs}
    try:
        model = ScalePredictor(**args)
    except TypeError as e:
        raise ValueError(f"scale predictor {name!r}: {e}") from None
    model.spec = {"name": name, "args": {k: v for k, v in args.items() if k != "backbone_weights"}}
    return model


def save_predictor(model: ScalePredictor, path: str | os.PathLike) -> Path:
    """Write ``path`` (.safetensors, atomically) with the spec in its metadata, and ``predictor.json`` beside it."""
    from safetensors.torch import save

    from ardet.files import atomic_write_bytes, atomic_write_json

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={SPEC_KEY: json.dumps(model.spec)}))
    atomic_write_json(path.parent / SIDECAR, model.spec)
    return path


def load_predictor(path: str | os.PathLike, device: str = "cpu") -> ScalePredictor:
    """Rebuild a saved predictor from its .safetensors file (or the folder holding ``predictor.safetensors``); the
    spec comes from the file's metadata, else from ``predictor.json`` beside it. Returned in eval mode."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        path = path / "predictor.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no scale predictor weights at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from None
    if SPEC_KEY in meta:
        where = f"{path} metadata {SPEC_KEY}"
        try:
            spec = json.loads(meta[SPEC_KEY])
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON: {e}") from None
    elif (path.parent / SIDECAR).is_file():
        where, spec = str(path.parent / SIDECAR), read_json(path.parent / SIDECAR)
    else:
        raise ValueError(f"{path}: no predictor spec in its metadata and no {SIDECAR} beside it")
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("args", {}), dict)):
        raise ValueError(f"{where}: expected a predictor spec {{name, args}}, got {str(spec)[:80]!r}")
    try:
        model = create_predictor(spec)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    check_finite_weights(state.items(), str(path))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing, unexpected or misshapen tensors
        raise ValueError(f"{path}: its tensors do not match the predictor its spec describes: {e}") from None
    return model.to(resolve_device(device)).eval()

