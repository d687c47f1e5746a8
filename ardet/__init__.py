"""ardet core: what every stage shares (image input, typed configs, atomic files, COCO ground truth and metrics).

The stages live in their own top-level packages: ``sr``, ``detector``, ``scale_predictor``, ``eval``, ``pipeline``.
"""
from ardet.config import ConfigError, apply_overrides, config_to_dict, load_config, save_config
from ardet.files import atomic_write_bytes, atomic_write_json, atomic_write_text, JsonlWriter, read_jsonl
from ardet.images import ImageDecodeError, ImageTooLargeError, LoadedImage, load_image, to_image
from ardet.synthetic import make_dataset

__version__ = "0.1.0"
__all__ = [
    "ConfigError", "apply_overrides", "config_to_dict", "load_config", "save_config",
    "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "JsonlWriter", "read_jsonl",
    "ImageDecodeError", "ImageTooLargeError", "LoadedImage", "load_image", "to_image",
    "make_dataset",
]
