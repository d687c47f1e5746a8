"""The LIIF benchmark protocol: HR cropped to a multiple of the scale, LR by PIL bicubic (the reference's
``resize_fn``), PSNR on the Y channel shaving ``scale`` pixels per border (and RGB PSNR, same shave), averaged over
images; PIL bicubic upsampling of the same LR as the control (reproduces the reference's bicubic rows). Each row also
carries the cost: MACs per output pixel (:func:`macs_per_px`) and wall time per output megapixel of the upscales."""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

Y_WEIGHTS = (65.738 / 256, 129.057 / 256, 25.064 / 256)  # BT.601 luma on [0, 1] images (offset cancels in a diff)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def benchmark_pair(hr_t: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR [3, h, w], HR [3, s*h, s*w]) in [0, 1] from an HR image [3, H, W] in [0, 1]: HR cropped at the top-left to
    a multiple of ``scale``; LR is the reference's 8-bit round trip (``ToPILImage`` truncates ``x * 255``) and PIL
    bicubic resize."""
    h, w = hr_t.shape[1] // scale, hr_t.shape[2] // scale
    hr_t = hr_t[:, :h * scale, :w * scale]
    as_pil = Image.fromarray(hr_t.mul(255).byte().permute(1, 2, 0).numpy())
    return _tensor(as_pil.resize((w, h), Image.BICUBIC)), hr_t


def bicubic_pil(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The reference's bicubic control: PIL bicubic upsampling of the 8-bit LR image."""
    as_pil = Image.fromarray(lr.mul(255).round().byte().permute(1, 2, 0).numpy())
    return _tensor(as_pil.resize((size[1], size[0]), Image.BICUBIC))


def psnr(sr: torch.Tensor, hr: torch.Tensor, shave: int, y_channel: bool = True) -> float:
    diff = sr.float() - hr.float()
    if y_channel:
        diff = torch.einsum("...chw,c->...hw", diff, diff.new_tensor(Y_WEIGHTS))
    if shave:
        diff = diff[..., shave:-shave, shave:-shave]
    mse = diff.pow(2).mean().item()
    return math.inf if mse == 0 else -10 * math.log10(mse)  # NaN stays NaN


def image_paths(folder: str | Path) -> list[Path]:
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def bicubic_torch(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The model-free path the pipeline runs (``sr.resize`` bicubic): what the cost columns of bicubic measure."""
    from sr.resample import resize

    return resize(x, size, "bicubic")


def macs_per_px(upscale, scale: int, lr_size: tuple[int, int] = (128, 128)) -> float:
    """MACs per output pixel of ``upscale(x, size)`` (``ardet.flops.count_flops`` on the real forward) for one LR
    input of ``lr_size`` upscaled ``scale`` times: per-LR-pixel work (the encoder) spreads over ``scale**2`` pixels."""
    from ardet.flops import count_flops

    size = (lr_size[0] * scale, lr_size[1] * scale)
    _, count = count_flops(upscale, torch.rand(1, 3, *lr_size, generator=torch.Generator().manual_seed(0)), size)
    return count.macs / (size[0] * size[1])


def evaluate(model, folder: str | Path, scales=(2, 3, 4), progress: bool = False,
             cost_lr_size: tuple[int, int] = (128, 128), bf16_time: bool = False) -> list[dict]:
    """One row per scale: mean PSNR (Y and RGB) of ``model.upscale`` and of bicubic over the images in ``folder``;
    MACs per output pixel of both on a ``cost_lr_size`` LR input; wall milliseconds per output megapixel of the
    upscales of the images (the model in its dtype on its device, synchronised on CUDA; bicubic by ``sr.resize`` on
    the CPU; with ``bf16_time`` the model cast to bfloat16 too)."""
    from tqdm import tqdm

    from ardet.images import load_image

    paths = image_paths(folder)
    device = next(model.parameters()).device
    timed = {"liif": model.upscale, "bicubic": bicubic_torch}  # bicubic on the CPU, where the LR images are
    if bf16_time:
        timed["liif_bf16"] = copy.deepcopy(model).to(torch.bfloat16).upscale
    for fn in timed.values():  # warm-up: first-call allocations and kernel selection stay out of the times
        fn(torch.rand(1, 3, 16, 16), (32, 32))
    rows = []
    for scale in scales:
        totals = {"liif_y": 0.0, "liif_rgb": 0.0, "bicubic_y": 0.0, "bicubic_rgb": 0.0}
        seconds, megapixels = dict.fromkeys(timed, 0.0), 0.0
        for path in tqdm(paths, desc=f"x{scale}", disable=not progress):
            pixels = load_image(path).pixels  # the reference's ToTensor(convert("RGB")) on 8-bit RGB; any mode
            if min(pixels.shape[-2:]) < 3 * scale:  # the protocol shaves `scale` HR pixels per border
                raise ValueError(f"{path}: {tuple(pixels.shape[-2:])} px is too small to benchmark at x{scale}")
            lr, hr = benchmark_pair(pixels, scale)
            size = tuple(hr.shape[-2:])
            megapixels += size[0] * size[1] / 1e6
            outputs = {}
            for key, fn in timed.items():
                start = time.perf_counter()
                out = fn(lr[None], size)[0]
                if out.device.type == "cuda":  # kernels run asynchronously: wait for them, not for the copy below
                    torch.cuda.synchronize(device)
                seconds[key] += time.perf_counter() - start
                outputs[key] = out.cpu()
            for key, out in (("liif", outputs["liif"]), ("bicubic", bicubic_pil(lr, size))):
                y, rgb = psnr(out, hr, scale), psnr(out, hr, scale, y_channel=False)
                if not math.isfinite(y + rgb):  # NaN output, or an exact (flat) image: no mean to report
                    raise ValueError(f"{path}: x{scale} {key} PSNR is not finite (Y {y}, RGB {rgb}); leave flat images out")
                totals[f"{key}_y"] += y / len(paths)
                totals[f"{key}_rgb"] += rgb / len(paths)
        cost = {"liif_macs_per_px": round(macs_per_px(model.upscale, scale, cost_lr_size), 1),
                "bicubic_macs_per_px": round(macs_per_px(bicubic_torch, scale, cost_lr_size), 1),
                **{f"{key}_ms_per_mpx": round(1e3 * s / megapixels, 1) for key, s in seconds.items()}}
        rows.append({"scale": scale, "images": len(paths), **{k: round(v, 4) for k, v in totals.items()}, **cost})
    return rows
