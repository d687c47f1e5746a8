"""``ardet upscale``: render an image at any size with LIIF (antialiased interpolation where it shrinks)."""
from pipeline.cli import add_command, check_not_inputs, parse_size


def add_parser(sub) -> None:
    p = add_command(sub, "upscale", "resize an image to any size with LIIF super-resolution; factors <= 1 use "
                    "antialiased bicubic interpolation unless --liif-always",
                    "ardet upscale in.png out.png --scale 2.5\n"
                    "ardet upscale in.jpg out.npy --size 800x1067 --model liif-small\n"
                    "ardet upscale in.png out.png --scale 4 --device cuda --dtype bfloat16")
    p.add_argument("input")
    p.add_argument("output", help=".png/.jpg: 8-bit (rounded); .npy: float32 HxWx3 in [0, 1], unquantised")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--scale", type=float, help="factor for both axes (output size rounded)")
    size.add_argument("--size", help="exact output size HxW")
    p.add_argument("--model", default="liif-edsr-baseline", help="registered name or checkpoint path")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--tile", type=int, default=512, help="encoder tile side in LR pixels (bounds memory)")
    p.add_argument("--liif-always", action="store_true", help="use LIIF even where the image shrinks")
    p.add_argument("--exif", choices=("apply", "ignore"), default="apply",
                   help="apply: turn a photo upright by its EXIF orientation first, as viewers show it (the output "
                        "has no orientation tag, so this keeps its appearance); ignore: the stored pixel grid")
    p.set_defaults(func=run)


def run(args) -> int:
    import io
    import math
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image

    import sr
    from ardet.files import atomic_write_bytes, atomic_write_image
    from ardet.images import load_image

    out = Path(args.output)
    check_not_inputs([("output", out)], [args.input])
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".npy") or out.is_dir():
        raise ValueError(f"{out}: output must be a .png, .jpg or .npy file")
    if args.scale is not None and not (math.isfinite(args.scale) and args.scale > 0):
        raise ValueError(f"--scale must be a positive number, got {args.scale}")
    img = load_image(args.input, exif=args.exif).pixels[None]
    h, w = img.shape[-2:]
    size = sr.check_size(parse_size(args.size) if args.size else
                         (max(1, round(h * args.scale)), max(1, round(w * args.scale))))
    grows = size[0] > h or size[1] > w
    model = sr.load_model(args.model, args.device, getattr(torch, args.dtype)) if grows or args.liif_always else None
    if args.liif_always:
        result = model.upscale(img, size, tile=args.tile)
    else:  # the model where the image grows; antialiased bicubic where it, or one of its axes, shrinks
        result = sr.resample(img, size, model, "bicubic", tile=args.tile)
    pixels = result[0].permute(1, 2, 0).float().cpu().numpy()
    # Atomic writes: a kill mid-save never leaves a broken file in place of an old one.
    if out.suffix.lower() == ".npy":
        buf = io.BytesIO()
        np.save(buf, pixels.astype(np.float32))
        atomic_write_bytes(out, buf.getvalue())
    else:
        atomic_write_image(out, Image.fromarray(np.round(pixels * 255).astype(np.uint8)))
    print(f"{args.input} {h}x{w} -> {out} {size[0]}x{size[1]}")
    return 0
