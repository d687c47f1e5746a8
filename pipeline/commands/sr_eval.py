"""``ardet sr-eval``: the LIIF benchmark protocol (Y-channel PSNR) of a model against bicubic."""
from pipeline.cli import add_command, parse_size


def add_parser(sub) -> None:
    p = add_command(sub, "sr-eval", "PSNR of a LIIF model on a folder of HR images (LIIF benchmark protocol: HR "
                    "cropped to a multiple of the scale, PIL-bicubic LR, Y channel shaving `scale` pixels; RGB too), "
                    "with bicubic as the control; cost columns: MACs per output pixel (counted on one "
                    "--cost-size LR input) and wall ms per output megapixel of the upscales on --device",
                    "ardet sr-eval --model liif-edsr-baseline --data ../shared/data/sr/Set5 --scales 2,3,4\n"
                    "ardet sr-eval --model liif-small --data DIR --scales 2,3,4,6 --json sr.json")
    p.add_argument("--model", required=True, help="registered name or checkpoint path")
    p.add_argument("--data", required=True, help="folder of HR images")
    p.add_argument("--scales", default="2,3,4", help="comma-separated integer scales")
    p.add_argument("--device", default="cpu", help="torch device the model runs on")
    p.add_argument("--cost-size", default="128x128", help="HxW of the LR input the MACs are counted on")
    p.add_argument("--bf16-time", action="store_true", help="also time the model cast to bfloat16 (one more pass)")
    p.add_argument("--json", help="also write the table as JSON here")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ardet.files import atomic_write_json
    from sr import load_model
    from sr.evaluate import evaluate

    try:
        scales = [int(s) for s in args.scales.split(",")]
    except ValueError:
        raise ValueError(f"--scales must be comma-separated integers, e.g. 2,3,4; got {args.scales!r}") from None
    if min(scales) < 1:
        raise ValueError(f"--scales must be positive integers, got {args.scales}")
    cost_size = parse_size(args.cost_size, "--cost-size")
    rows = evaluate(load_model(args.model, args.device), args.data, scales, progress=True, cost_lr_size=cost_size,
                    bf16_time=args.bf16_time)
    bf16 = f" {'bf16 ms/Mpx':>11}" if args.bf16_time else ""
    print(f"{'scale':>5} {'images':>6} {'LIIF Y':>8} {'bicubic Y':>9} {'LIIF RGB':>9} {'bicubic RGB':>11} "
          f"{'LIIF MAC/px':>11} {'bicubic MAC/px':>14} {'LIIF ms/Mpx':>11} {'bicubic ms/Mpx':>14}{bf16}")
    for r in rows:
        bf16 = f" {r['liif_bf16_ms_per_mpx']:11.0f}" if args.bf16_time else ""
        print(f"{'x' + str(r['scale']):>5} {r['images']:>6} {r['liif_y']:8.2f} {r['bicubic_y']:9.2f} "
              f"{r['liif_rgb']:9.2f} {r['bicubic_rgb']:11.2f} {r['liif_macs_per_px']:11,.0f} "
              f"{r['bicubic_macs_per_px']:14,.0f} {r['liif_ms_per_mpx']:11.0f} {r['bicubic_ms_per_mpx']:14.1f}{bf16}")
    print(f"MACs counted on one {cost_size[0]}x{cost_size[1]} LR input; times: {args.device}, "
          f"{torch.get_num_threads()} thread(s), float32 unless marked bf16")
    if args.json:
        atomic_write_json(args.json, {"model": args.model, "data": str(args.data), "cost_lr_size": list(cost_size),
                                      "threads": torch.get_num_threads(), "device": args.device, "rows": rows})
    return 0
