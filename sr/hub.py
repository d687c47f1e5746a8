"""Named LIIF models and self-describing checkpoints.

A checkpoint is a safetensors file whose metadata holds ``name`` (the architecture, "liif") and ``args`` (JSON); the
official ``.pth`` files (``{'model': {'name', 'args', 'sd'}}``) load through an explicit, checked key map.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from ardet.device import resolve_device
from ardet.files import check_finite_weights, load_torch_checkpoint
from sr.liif import LIIF
from sr.models import make


def _liif_args(encoder: str, hidden: list[int], lr_skip: bool = False, **encoder_args) -> dict:
    return {"encoder_spec": {"name": encoder, "args": {"no_upsampling": True, **encoder_args}},
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": hidden}},
            **({"lr_skip": True} if lr_skip else {})}


WEIGHTS_DIR = Path(__file__).parent / "weights"

# name -> (LIIF args, where its weights are: "cache" = `ardet weights pull NAME`, a file in sr/weights/, or None)
MODELS: dict[str, tuple[dict, str | None]] = {
    "liif-edsr-baseline": (_liif_args("edsr-baseline", [256] * 4), "cache"),
    "liif-rdn": (_liif_args("rdn", [256] * 4), None),
    "liif-small": (_liif_args("edsr-baseline", [64] * 3, True, n_resblocks=4, n_feats=32), "liif-small.safetensors"),
    # The distilled family (docs/sr-models.md): ~100x / ~35x / ~11x fewer MACs per output px than the official at x2.
    "liif-nano": (_liif_args("edsr-baseline", [16] * 2, True, n_resblocks=3, n_feats=24), "liif-nano.safetensors"),
    "liif-micro": (_liif_args("edsr-baseline", [32] * 2, True, n_resblocks=5, n_feats=32), "liif-micro.safetensors"),
    "liif-mini": (_liif_args("edsr-baseline", [48] * 2, True, n_resblocks=8, n_feats=48), "liif-mini.safetensors"),
}

# Official state-dict entries the reference builds but never uses in forward (EDSR mean shifts).
_UNUSED_OFFICIAL = ("encoder.sub_mean.", "encoder.add_mean.")


def list_models() -> list[str]:
    return sorted(MODELS)


def create_model(name: str, **args) -> LIIF:
    """A randomly initialised named model; ``args`` override its LIIF args (e.g. imnet_spec=...)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    return _build({**copy.deepcopy(MODELS[name][0]), **args}, f"model {name!r} with args {args}")


def load_model(name_or_path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LIIF:
    """A registered name (weights from the cache or the package) or a ``.safetensors`` / ``.pth`` path, in eval mode."""
    return load_checkpoint(weights_file(name_or_path)).to(resolve_device(device), dtype).eval()


def weights_file(name_or_path: str) -> Path:
    """The file :func:`load_model` reads for a registered name or a path; FileNotFoundError says why there is none."""
    if name_or_path in MODELS:
        where = MODELS[name_or_path][1]
        if where is None:
            raise FileNotFoundError(f"no weights for {name_or_path!r} are available offline; pass a checkpoint path")
        if where == "cache":
            from ardet.weights import weights_path

            return weights_path(name_or_path)
        path = WEIGHTS_DIR / where
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the weights shipped with the package are missing; reinstall ardet")
        return path
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"{name_or_path}: neither a file nor a model name ({', '.join(list_models())})")
    return path


def load_checkpoint(path: str | Path) -> LIIF:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt headers
            raise ValueError(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from e
        if meta.get("name") != "liif" or "args" not in meta:
            raise ValueError(f"{path}: metadata must hold name='liif' and args, found {sorted(meta)}")
        try:
            args = json.loads(meta["args"])
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: metadata args are not valid JSON: {e}") from None
        return _with_state(_build(args, path), sd, path)
    return from_official(load_torch_checkpoint(path, "cpu"), path)


# The reference's switches, which this LIIF always has on; lr_skip is the project's own (sr.liif.LIIF).
_ALWAYS_ON = ("local_ensemble", "feat_unfold", "cell_decode")


def _build(args, source) -> LIIF:
    """A LIIF from a checkpoint's args, every key checked: one dropped (lr_skip) would give other outputs from the
    same weights, and a bad one is an error naming the file rather than a TypeError from deep inside."""
    if not isinstance(args, dict) or not {"encoder_spec", "imnet_spec"} <= args.keys():
        raise ValueError(f"{source}: LIIF args must be a mapping with encoder_spec and imnet_spec, got {args!r:.200}")
    off = [k for k in _ALWAYS_ON if args.get(k, True) is not True]
    unknown = sorted(set(args) - {"encoder_spec", "imnet_spec", "lr_skip", *_ALWAYS_ON})
    if off or unknown:
        raise ValueError(f"{source}: unsupported LIIF args {off + unknown} (this LIIF always has "
                         f"{', '.join(_ALWAYS_ON)} on and knows lr_skip)")
    try:
        return make({"name": "liif", "args": {k: v for k, v in args.items() if k not in _ALWAYS_ON}})
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: cannot build its LIIF from args {args!r:.300}: {e}") from None


def from_official(ckpt, source="checkpoint") -> LIIF:
    """The reference's ``{'model': {'name': 'liif', 'args': ..., 'sd': ...}}``: same names except the unused mean
    shifts, which are dropped; everything else must match in name and shape."""
    try:
        spec = ckpt["model"]
        name, sd, args = spec["name"], spec["sd"], spec["args"]
    except (KeyError, TypeError, IndexError):
        found = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{source}: not a LIIF checkpoint: expected "
                         f"{{'model': {{'name', 'args': {{encoder_spec, imnet_spec}}, 'sd'}}}}, "
                         f"found {found}") from None
    if name != "liif":
        raise ValueError(f"{source}: model name {name!r}, expected 'liif' (LIIF with feature unfold, local ensemble, "
                         "cell decoding)")
    sd = {k: v for k, v in sd.items() if not k.startswith(_UNUSED_OFFICIAL)}
    return _with_state(_build(args, source), sd, source)


def _with_state(model: LIIF, sd: dict, source) -> LIIF:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
              if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or shapes:
        problems = [f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''} ({len(items)})"
                    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if items]
        raise ValueError(f"{source}: state dict does not match {_describe(model)}: " + "; ".join(problems))
    check_finite_weights(sd.items(), str(source))
    model.load_state_dict(sd)
    return model


def _describe(model: LIIF) -> str:
    enc = model.args["encoder_spec"]
    return f"LIIF({enc['name']} {enc.get('args', {})}, mlp {model.args['imnet_spec']['args']['hidden_list']})"


def save_model(model: LIIF, path: str | Path) -> None:
    """Self-describing safetensors (metadata name='liif', args JSON), written atomically."""
    from safetensors.torch import save

    from ardet.files import atomic_write_bytes

    sd = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(sd, metadata={"name": "liif", "args": json.dumps(model.args)}))
