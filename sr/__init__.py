"""sr: LIIF arbitrary-scale super-resolution (reference-exact plain path, fast tiled path) and plain resizing."""
from sr.hub import MODELS, create_model, list_models, load_checkpoint, load_model, save_model, weights_file
from sr.liif import LIIF
from sr.resample import MAX_OUTPUT_PIXELS, Resampler, check_size, resample, resize

__all__ = ["LIIF", "MAX_OUTPUT_PIXELS", "MODELS", "Resampler", "check_size", "create_model", "list_models",
           "load_checkpoint", "load_model", "resample", "resize", "save_model", "weights_file"]
