"""Building and loading DETR-family models, offline-safe, and mapping their classes to dataset categories."""
from __future__ import annotations

import inspect
import json
import logging
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from ardet.coco import read_categories
from ardet.config import repeated
from ardet.files import check_finite_weights, read_json
from ardet.images import IMAGENET_MEAN, IMAGENET_STD
from detector.config import DetectorConfig, ModelConfig
from detector.detect import Detector

log = logging.getLogger(__name__)

# Training output folders hold these self-describing model folders (config.json + model.safetensors).
BEST, LAST = "best", "checkpoint"
_PLACEHOLDER_LABELS = {"n/a", "na", "none", "background", "__background__", "no object"}


def load_detector(spec: str, *, device: str = "cpu", threshold: float = 0.0, top_k: int = 100,
                  categories: list[dict] | None = None) -> Detector:
    """A :class:`Detector` from a hub id (online), a ``save_pretrained`` / ``train-detector`` folder, or a project
    YAML config (random init, offline). ``categories`` (COCO's list of ``{id, name}``) are mapped to the model's
    classes here, so a mismatch fails at start. Without them, a ``train-detector`` model reports the category ids of
    the dataset it was trained on (``category_ids`` in its config.json), any other model its class indices."""
    model, mean, std = load_model(spec)
    trained_on = getattr(model.config, "category_ids", None)
    if categories is None and trained_on:
        label_map = {int(label): int(category) for label, category in trained_on.items()}
    else:
        label_map = map_labels(model.config.id2label, categories)
    return Detector(model, label_map, mean=mean, std=std, threshold=threshold, top_k=top_k, device=device)


def load_model(spec: str, id2label: dict[int, str] | None = None) -> tuple[nn.Module, tuple, tuple]:
    """The transformers model named by ``spec`` and its normalisation (mean, std). ``id2label`` replaces a saved
    model's classes with a new, randomly initialised class head (fine-tuning on other categories)."""
    from ardet.config import load_config

    kind = _spec_kind(spec)
    if kind == "yaml":
        cfg = load_config(DetectorConfig, spec)
        categories = [{"id": i, "name": n} for i, n in id2label.items()] if id2label else config_categories(cfg)
        return build_model(cfg.model, categories), IMAGENET_MEAN, IMAGENET_STD
    if kind == "folder":
        return _from_pretrained(_model_dir(Path(spec)), local=True, id2label=id2label)
    return _from_pretrained(spec, local=False, id2label=id2label)


def _spec_kind(spec: str) -> str:
    """"yaml", "folder" or "hub" for a detector spec; FileNotFoundError for a local-looking path that is not there."""
    path = Path(spec)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return "yaml"
    if path.is_dir():
        return "folder"
    if path.exists() or str(spec).startswith((".", "/", "~")) or path.suffix in (".yaml", ".yml", ".json"):
        raise FileNotFoundError(f"detector {spec!r}: no such model folder or YAML config")
    return "hub"


def config_categories(cfg: DetectorConfig) -> list[dict] | None:
    """The classes a config's model is built with: its own list, else the train JSON's categories, else None."""
    if cfg.model.categories:
        return [{"id": c.id, "name": c.name} for c in cfg.model.categories]
    if cfg.data.train_json and Path(cfg.data.train_json).is_file():
        return read_categories(cfg.data.train_json)
    return None


def build_model(cfg: ModelConfig, categories: list[dict] | None = None) -> nn.Module:
    """A randomly initialised model from a project config; no network, no pretrained weights."""
    from transformers import AutoConfig, AutoModelForObjectDetection, ResNetConfig, TimmBackboneConfig

    bb = cfg.backbone
    if bb.kind == "resnet":
        backbone = ResNetConfig(embedding_size=bb.embedding_size, hidden_sizes=bb.hidden_sizes, depths=bb.depths,
                                layer_type=bb.layer_type, out_features=[f"stage{s}" for s in bb.out_stages])
    else:
        backbone = TimmBackboneConfig(backbone=bb.timm_name, out_indices=list(bb.out_stages),
                                      use_pretrained_backbone=False)
    if categories:
        id2label = {i: c["name"] for i, c in enumerate(categories)}
    else:
        id2label = {i: f"LABEL_{i}" for i in range(cfg.num_labels)}
    defaults = AutoConfig.for_model(cfg.arch)
    known = {*defaults.to_dict(), *inspect.signature(type(defaults).__init__).parameters, "attn_implementation"}
    unknown = sorted(set(cfg.extra) - known)
    if unknown:  # transformers would keep a misspelt field as an attribute nothing reads
        raise ValueError(f"model.extra: {', '.join(unknown)} are not {cfg.arch} config fields")
    config = AutoConfig.for_model(
        cfg.arch, backbone_config=backbone, d_model=cfg.d_model, encoder_layers=cfg.encoder_layers,
        decoder_layers=cfg.decoder_layers, encoder_ffn_dim=cfg.ffn_dim, decoder_ffn_dim=cfg.ffn_dim,
        encoder_attention_heads=cfg.heads, decoder_attention_heads=cfg.heads, num_queries=cfg.queries,
        dropout=cfg.dropout, auxiliary_loss=cfg.aux_loss, id2label=id2label,
        label2id={n: i for i, n in id2label.items()}, **cfg.extra)
    return AutoModelForObjectDetection.from_config(config)


def weights_sha256(spec: str) -> str:
    """The identity of what :func:`load_model` would read for ``spec``, without building the model: the sha256 of
    its config, preprocessor config and weights files (a hub id: those in the local hub cache; a YAML config: its
    text, though the random init it builds also depends on the torch seed).
    FileNotFoundError when they are not here."""
    import hashlib

    from ardet.files import sha256

    kind = _spec_kind(spec)
    if kind == "yaml":
        files = [Path(spec)]
    elif kind == "folder":
        folder = _model_dir(Path(spec))
        files = sorted(f for f in folder.iterdir() if f.name in ("config.json", "preprocessor_config.json")
                       or f.suffix in (".safetensors", ".bin"))
    else:
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = {name: try_to_load_from_cache(str(spec), name)
                      for name in ("config.json", "preprocessor_config.json", "model.safetensors", "pytorch_model.bin")}
        except ValueError as e:  # not a valid repository id either
            raise FileNotFoundError(f"detector {spec!r}: no such folder, YAML or hub repository ({e})") from None
        files = [f for f in cached.values() if isinstance(f, str)]
        if not isinstance(cached["config.json"], str) or not any(n.endswith((".safetensors", ".bin"))
                                                                  for n in map(str, files)):
            raise FileNotFoundError(f"detector {spec!r}: not a local folder or YAML, nor in the local hub cache")
    return hashlib.sha256(" ".join(f"{Path(f).name}:{sha256(f)}" for f in files).encode()).hexdigest()


def _model_dir(path: Path) -> Path:
    """A model folder, or the best (else latest) model of a ``train-detector`` output folder."""
    for candidate in (path, path / BEST, path / LAST):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(f"{path}: no config.json here (nor in {BEST}/ or {LAST}/): not a saved model folder")


def _from_pretrained(spec: str | Path, local: bool, id2label: dict[int, str] | None = None
                     ) -> tuple[nn.Module, tuple, tuple]:
    from safetensors import SafetensorError
    from transformers import AutoModelForObjectDetection

    try:
        config = offline_safe_config(_read_json(spec, "config.json", local))
    except ValueError as e:  # transformers' own errors for an unknown model_type or a bad field are ValueErrors too
        raise ValueError(f"detector {spec}: {e}") from None
    if id2label:
        config.id2label, config.label2id = dict(id2label), {n: i for i, n in id2label.items()}
    try:
        model, info = AutoModelForObjectDetection.from_pretrained(
            str(spec), config=config, local_files_only=local, ignore_mismatched_sizes=bool(id2label),
            output_loading_info=True)
    except pickle.UnpicklingError:  # torch.load(weights_only=True) met objects other than tensors
        raise ValueError(f"detector {spec}: its pytorch_model.bin holds more than tensors, so it was not unpickled "
                         f"(arbitrary code could run); use a model.safetensors from a source you trust") from None
    except (OSError, SafetensorError, RuntimeError) as e:  # no weights file, or a truncated or foreign one
        raise ValueError(f"detector {spec}: its weights cannot be loaded: {str(e).splitlines()[0]}") from None
    # transformers fills tensors the file lacks with random values and only warns: a detector that silently detects
    # noise. A new class head (id2label) is replaced on purpose and reported as mismatched, not missing.
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise ValueError(f"detector {spec}: its weights lack {len(missing)} of the model's tensors ({', '.join(missing[:3])}"
                         f"{', ...' if len(missing) > 3 else ''}): the weights file does not match config.json")
    check_finite_weights(model.state_dict().items(), f"detector {spec}")
    if id2label:
        _reset_class_head(model)
    processor = _read_json(spec, "preprocessor_config.json", local, required=False) or {}
    if processor.get("do_normalize", True):
        mean, std = tuple(processor.get("image_mean", IMAGENET_MEAN)), tuple(processor.get("image_std", IMAGENET_STD))
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return model, mean, std


def _reset_class_head(model: nn.Module) -> None:
    """Re-initialise, with the architecture's own init, every tensor whose shape depends on the number of classes.
    ignore_mismatched_sizes replaces them only when the count changes: new classes as many as the old would inherit
    the old classes' head, class i silently starting as old class i."""
    import copy

    from transformers import AutoModelForObjectDetection

    wider = copy.deepcopy(model.config)
    wider.id2label = {**model.config.id2label, len(model.config.id2label): "one more"}
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in AutoModelForObjectDetection.from_config(wider).state_dict().items()}
    fresh = AutoModelForObjectDetection.from_config(model.config).state_dict()
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if shapes.get(key, tensor.shape) != tensor.shape:
                tensor.copy_(fresh[key])


def _read_json(spec: str | Path, name: str, local: bool, required: bool = True) -> dict | None:
    if local:
        path = Path(spec) / name
        return read_json(path) if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    try:
        return json.loads(Path(hf_hub_download(str(spec), name)).read_text())
    except Exception as e:
        if not required and isinstance(e, (RemoteEntryNotFoundError, LocalEntryNotFoundError)):
            return None
        if isinstance(e, RemoteEntryNotFoundError):
            raise FileNotFoundError(f"detector {spec!r}: the hub repository has no {name}") from None
        # Offline and not cached, unknown repository, no network: one message that says what to do.
        raise FileNotFoundError(
            f"detector {spec!r} is not a local model folder or YAML config, and the hub cannot provide it "
            f"({type(e).__name__}). Online, a hub id such as facebook/detr-resnet-50 downloads once into the cache; "
            f"offline, pass a folder written by save_pretrained or train-detector, or a configs/detector/*.yaml"
        ) from None


def offline_safe_config(data: dict):
    """A transformers config from a config.json dict, never touching the hub.

    Configs written by transformers 4.x may hold ``backbone_kwargs`` for a timm backbone; 5.x then asks the hub
    whether that timm model exists, which fails offline. We turn them into the explicit timm ``backbone_config``
    they stand for (pretrained backbone weights off: the checkpoint holds all weights).
    """
    from transformers import AutoConfig

    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ValueError("config.json must be a JSON object with a model_type (a transformers model config)")
    data = dict(data)
    kwargs = data.pop("backbone_kwargs", None)
    if kwargs is not None and not data.get("backbone_config") and data.get("use_timm_backbone", True):
        backbone = {"model_type": "timm_backbone", "backbone": data.get("backbone") or "resnet50",
                    "num_channels": kwargs.get("in_chans", data.get("num_channels", 3)), "features_only": True,
                    "use_pretrained_backbone": False, "out_indices": kwargs.get("out_indices", [1, 2, 3, 4])}
        if kwargs.get("output_stride"):
            backbone["output_stride"] = kwargs["output_stride"]
        data.update(backbone_config=backbone, use_timm_backbone=False, backbone=None)
    data["use_pretrained_backbone"] = False
    model_type = data.pop("model_type")
    return AutoConfig.for_model(model_type, **data)


def map_labels(id2label: dict, categories: list[dict] | None) -> dict[int, int]:
    """Model label index -> dataset category id.

    Without ``categories`` every named class keeps its index as id (COCO-trained DETR uses COCO ids). With them:
    by id when each category's id is a model class of the same name (or an unnamed ``LABEL_i`` class), else by
    name. A category the model cannot output is an error now, not AP = 0 after an evaluation.
    """
    names = {int(i): _norm(n) for i, n in id2label.items()}
    named = {i: n for i, n in names.items() if n not in _PLACEHOLDER_LABELS}
    if categories is None:
        return {i: i for i in named}
    wanted = {int(c["id"]): _norm(c["name"]) for c in categories}
    for what, values in (("ids", [int(c["id"]) for c in categories]), ("names", [_norm(c["name"]) for c in categories])):
        twice = sorted(str(v) for v in repeated(values))
        if twice:  # one of them would silently never be detected
            raise ValueError(f"dataset categories repeat {what}: {', '.join(twice)}")
    if all(names.get(cid) in (name, f"label {cid}") for cid, name in wanted.items()):
        log.info("detector classes mapped to %d dataset categories by id", len(wanted))
        return {cid: cid for cid in wanted}
    index_of: dict[str, list[int]] = {}
    for i, n in named.items():
        index_of.setdefault(n, []).append(i)
    missing = [f"{cid}:{name}" for cid, name in wanted.items() if name not in index_of]
    if missing:
        shown = ", ".join(f"{i}:{n}" for i, n in list(named.items())[:20]) + (", ..." if len(named) > 20 else "")
        raise ValueError(f"the detector cannot output dataset categories {', '.join(missing)} (matched by id and by "
                         f"name); its classes are {shown}. Use a detector trained on these categories "
                         f"(ardet train-detector) or the dataset it was trained on")
    ambiguous = [name for name in wanted.values() if len(index_of[name]) > 1]
    if ambiguous:
        raise ValueError(f"category names {ambiguous} match several detector classes; match by id instead")
    log.info("detector classes mapped to %d dataset categories by name", len(wanted))
    return {index_of[name][0]: cid for cid, name in wanted.items()}


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


def set_trainable(model: nn.Module, freeze_backbone: bool) -> None:
    """Explicit freezing: everything trains except, if asked, the CNN backbone. transformers' own choice is wrong
    for some backbones (native ResNet frozen entirely by a name check, timm not at all)."""
    for name, p in model.named_parameters():
        p.requires_grad_(not (freeze_backbone and in_backbone(name)))


def in_backbone(parameter_name: str) -> bool:
    """Whether a parameter belongs to the CNN backbone (``model.backbone.*`` in every DETR-family model)."""
    return ".backbone." in f".{parameter_name}"


def use_trainable_batchnorm(model: nn.Module) -> None:
    """Swap the backbone's frozen BatchNorm (an identity at random init) for ``nn.BatchNorm2d`` with the same state,
    so a backbone trained from scratch is normalised. Saved weights load back into frozen BatchNorm unchanged."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child).__name__.endswith("FrozenBatchNorm2d"):
                bn = nn.BatchNorm2d(child.weight.numel()).to(child.weight.device)
                with torch.no_grad():
                    for key in ("weight", "bias", "running_mean", "running_var"):
                        getattr(bn, key).copy_(getattr(child, key))
                setattr(parent, child_name, bn)
