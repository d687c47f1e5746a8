"""The one image loader every stage uses: any common file -> RGB float tensor [3, h, w] in [0, 1].

Policies, chosen to match how COCO annotations and DETR treat pixels:
- EXIF orientation: ``"ignore"`` (default) keeps the stored pixel grid, which is the grid COCO boxes refer to;
  ``"apply"`` rotates/flips as the EXIF tag says (the size reported is then the rotated size).
- Transparency (RGBA, LA, palette with transparency): ``"white"`` (default) composites on white, as a viewer shows it;
  ``"drop"`` discards alpha and keeps the stored colour.
- 16-bit and 32-bit integer (grayscale) images are scaled by their full range (65535), never clipped to 8 bits.
  16-bit colour PNGs come through Pillow at 8 bits per channel (it has no 16-bit RGB mode), with a warning.
- CMYK, palette, grayscale, YCbCr: converted by Pillow's colour conversion.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ardet.config import repeated

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own decompression-bomb error threshold (2 x MAX_IMAGE_PIXELS)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the normalisation ImageNet-pretrained backbones (detector, predictor) expect
IMAGENET_STD = (0.229, 0.224, 0.225)
PIXEL_RANGE_SLACK = 1e-3  # what a stage accepts beyond [0, 1]: rounding of resampled or half-precision pixels

ExifPolicy = Literal["ignore", "apply"]
AlphaPolicy = Literal["white", "drop"]
ImageSource = Union[str, os.PathLike, bytes, Image.Image, torch.Tensor, np.ndarray]


class ImageDecodeError(ValueError):
    """A file that is not a decodable image: corrupt, truncated, empty, or of an unsupported kind."""


class ImageTooLargeError(ImageDecodeError):
    """An image whose pixel count exceeds the configured maximum (a guard against decompression bombs)."""


@dataclass(frozen=True)
class LoadedImage:
    """An image ready for any stage. ``size`` is the original ``(height, width)``; boxes are reported in it."""

    id: str | int
    pixels: torch.Tensor  # float32 [3, h, w] in [0, 1]
    path: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[-2]), int(self.pixels.shape[-1])


def load_image(path: str | os.PathLike, *, image_id: str | int | None = None, exif: ExifPolicy = "ignore",
               alpha: AlphaPolicy = "white", max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an image file; its id is ``image_id``, else :func:`file_image_id`. Raises :class:`ImageDecodeError`
    naming the file for anything that is not a clean image."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageDecodeError(f"{path}: cannot read image file: {e.strerror or e}") from None
    pixels = _decode(data, str(path), exif=exif, alpha=alpha, max_pixels=max_pixels)
    return LoadedImage(id=file_image_id(path) if image_id is None else image_id, pixels=pixels, path=str(path))


def check_pixels(x: torch.Tensor, ndim: int, where: str) -> None:
    """What every stage takes: float pixels in [0, 1] shaped ``[3, H, W]`` (``ndim`` 3) or ``[B, 3, H, W]`` (4), as
    :func:`to_image` makes them. A uint8 image or another layout would run, silently wrong, or fail deep inside."""
    shape = "[3, H, W]" if ndim == 3 else "[B, 3, H, W]"
    if not isinstance(x, torch.Tensor) or x.ndim != ndim or x.shape[-3] != 3:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{where}: expected a {shape} tensor, got {got}")
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{where}: the image has no pixels ({tuple(x.shape)})")
    if not x.is_floating_point():
        raise TypeError(f"{where}: expected float pixels in [0, 1], got {x.dtype} (ardet.to_image converts uint8)")
    if x.is_meta:
        raise ValueError(f"{where}: a meta tensor has no pixel values")
    lo, hi = (float(v) for v in torch.aminmax(x)) if x.numel() else (0.0, 0.0)  # an empty batch
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{where}: pixels contain NaN or infinity")
    if lo < -PIXEL_RANGE_SLACK or hi > 1 + PIXEL_RANGE_SLACK:  # 0-255 floats are the usual mistake
        raise ValueError(f"{where}: float pixels must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]"
                         + (" (divide 0-255 values by 255)" if hi > 1.5 else ""))


def file_image_id(path: str | os.PathLike) -> str | int:
    """An image file's id: its name's stem, an integer when all digits (``000123.jpg`` -> 123, as COCO ids are)."""
    stem = Path(path).stem
    return int(stem) if stem.isascii() and stem.isdigit() else stem


def check_unique_ids(ids: list, hint: str) -> None:
    """Refuse images that would share an id in COCO results (their detections would be merged)."""
    shared = sorted(str(i) for i in repeated(ids))
    if shared:
        raise ValueError(f"images share an image id ({', '.join(shared)}): {hint}")


def to_image(source: ImageSource, *, image_id: str | int | None = None, exif: ExifPolicy = "ignore",
             alpha: AlphaPolicy = "white", max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Accept a path, encoded bytes, a PIL image, a ``[3,h,w]`` tensor or an ``[h,w,3]`` array (uint8, or float in [0,1]).

    Grayscale ``[h,w]`` (and one-channel) inputs are repeated to three channels.
    """
    if isinstance(source, LoadedImage):
        return source
    if isinstance(source, (str, os.PathLike)):
        return load_image(source, image_id=image_id, exif=exif, alpha=alpha, max_pixels=max_pixels)
    name = f"<{type(source).__name__}>"
    if isinstance(source, bytes):
        pixels = _decode(source, name, exif=exif, alpha=alpha, max_pixels=max_pixels)
    elif isinstance(source, Image.Image):
        pixels = _pil_image_to_tensor(source, name, exif=exif, alpha=alpha, max_pixels=max_pixels)
    elif isinstance(source, np.ndarray):  # numpy arrays follow PIL's [h, w, 3] layout
        pixels = _array_to_tensor(torch.from_numpy(np.ascontiguousarray(source)), name, max_pixels, channels_last=True)
    elif isinstance(source, torch.Tensor):  # tensors follow torch's [3, h, w] layout
        pixels = _array_to_tensor(source, name, max_pixels, channels_last=False)
    else:
        raise TypeError(f"cannot make an image from {type(source).__name__}")
    return LoadedImage(id=0 if image_id is None else image_id, pixels=pixels)


def _decode(data: bytes, name: str, *, exif: ExifPolicy, alpha: AlphaPolicy, max_pixels: int) -> torch.Tensor:
    if exif not in ("ignore", "apply"):
        raise ValueError(f"exif policy must be 'ignore' or 'apply', got {exif!r}")
    if not data:
        raise ImageDecodeError(f"{name}: empty file (0 bytes), not an image")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[24:26] in (b"\x10\x02", b"\x10\x04", b"\x10\x06"):  # IHDR
        logging.getLogger(__name__).warning("%s: 16-bit colour PNG, decoded at 8 bits per channel (Pillow's limit)",
                                            name)
    with _decode_errors(name), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own max_pixels check decides
        with Image.open(io.BytesIO(data)) as im:
            return _pil_image_to_tensor(im, name, exif=exif, alpha=alpha, max_pixels=max_pixels)


def _pil_image_to_tensor(im: Image.Image, name: str, *, exif: ExifPolicy, alpha: AlphaPolicy,
                         max_pixels: int) -> torch.Tensor:
    _check_size(im.size, name, max_pixels)
    with _decode_errors(name):
        im.load()  # Pillow decodes lazily: a truncated stream fails here
    return _pil_to_tensor(_oriented(im, exif), alpha, name)


@contextlib.contextmanager
def _decode_errors(name: str):
    """Pillow's many failure types for a file that is not a readable image, as one ImageDecodeError naming it."""
    try:
        yield
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"{name}: {e}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name}: not a recognised image format (corrupt or not an image)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:  # truncated or corrupt streams
        raise ImageDecodeError(f"{name}: corrupt or truncated image: {e}") from None


def _check_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ImageDecodeError(f"{name}: image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageTooLargeError(f"{name}: {w}x{h} = {w * h:,} pixels exceeds max_pixels={max_pixels:,}")


def _oriented(im: Image.Image, exif: ExifPolicy) -> Image.Image:
    return ImageOps.exif_transpose(im) if exif == "apply" else im


def _pil_to_tensor(im: Image.Image, alpha: AlphaPolicy, name: str) -> torch.Tensor:
    if alpha not in ("white", "drop"):
        raise ValueError(f"alpha policy must be 'white' or 'drop', got {alpha!r}")
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        gray = np.asarray(im, dtype=np.float64)  # 16-bit range; PNG 16-bit opens as I;16 or I
        if gray.size and (gray.min() < 0 or gray.max() > 65535):  # a 32-bit integer image (TIFF): no known range
            raise ImageDecodeError(f"{name}: {mode} pixels outside the 16-bit range [0, 65535] "
                                   f"([{gray.min():.0f}, {gray.max():.0f}]); convert it to 8 or 16 bits")
        return _finite(torch.from_numpy(gray / 65535.0).float().expand(3, -1, -1).contiguous(), name)
    if mode == "F":  # float pixels, in [0, 1] as float tensors are (Pillow's convert("F") gives 0-255: divide first)
        return _float_pixels(torch.from_numpy(np.array(im, dtype=np.float32)).expand(3, -1, -1), name)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("PA", "LA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        rgba = _chw_float(im)
        rgb, a = rgba[:3], rgba[3:]
        return (rgb * a + (1.0 - a) if alpha == "white" else rgb).contiguous()
    if im.mode != "RGB":
        im = im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return _chw_float(im)


def _chw_float(im: Image.Image) -> torch.Tensor:
    """An 8-bit multi-channel PIL image as [C, h, w] float32 in [0, 1], with one float copy (a 24 MP photo: 0.2 GB
    less at peak than converting, scaling and transposing in three)."""
    pixels = torch.from_numpy(np.array(im))  # uint8 [h, w, C]; a writable copy, as torch wants
    return torch.empty(pixels.shape[2], *pixels.shape[:2]).copy_(pixels.permute(2, 0, 1)).div_(255.0)


def _array_to_tensor(t: torch.Tensor, name: str, max_pixels: int, channels_last: bool) -> torch.Tensor:
    given = tuple(t.shape)  # as the caller passed it, for the messages
    if t.ndim == 2:
        t = t.unsqueeze(0)
    elif t.ndim == 3 and channels_last:
        t = t.permute(2, 0, 1)
    if t.ndim != 3:
        raise ImageDecodeError(f"{name}: expected a [3,h,w] tensor or an [h,w,3] array, got shape {given}")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    if t.shape[0] != 3:
        layout = "[h,w,3] array" if channels_last else "[3,h,w] tensor"
        raise ImageDecodeError(f"{name}: expected 1 or 3 channels ({layout}), got shape {given}")
    _check_size((t.shape[2], t.shape[1]), name, max_pixels)
    if t.dtype == torch.uint8:
        return t.float().div(255.0).contiguous()
    if not t.is_floating_point():
        raise ImageDecodeError(f"{name}: integer tensors must be uint8, got {t.dtype}")
    return _float_pixels(t, name)


def _float_pixels(t: torch.Tensor, name: str) -> torch.Tensor:
    t = _finite(t.float(), name)
    if t.min() < 0 or t.max() > 1:
        raise ImageDecodeError(f"{name}: float pixels must lie in [0, 1], got [{t.min():.3g}, {t.max():.3g}]")
    return t.contiguous()


def _finite(t: torch.Tensor, name: str = "image") -> torch.Tensor:
    if not torch.isfinite(t).all():
        raise ImageDecodeError(f"{name}: pixels contain NaN or infinity")
    return t
