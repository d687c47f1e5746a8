"""``ardet sr-eval``: the LIIF benchmark protocol (Y-channel PSNR) of a model against bicubic."""
from pipeline.cli import add_command


def add_parser(sub) -> None:
    p = add_command(sub, "sr-eval", "PSNR of a LIIF model on a folder of HR images (LIIF benchmark protocol: HR "
                    "cropped to a multiple of the scale, PIL-bicubic LR, Y channel shaving `scale` pixels; RGB too), "
                    "with bicubic as the control",
                    "ardet sr-eval --model liif-edsr-baseline --data ../shared/data/sr/Set5 --scales 2,3,4\n"
                    "ardet sr-eval --model liif-small --data DIR --scales 2,3,4,6 --json sr.json")
    p.add_argument("--model", required=True, help="registered name or checkpoint path")
    p.add_argument("--data", required=True, help="folder of HR images")
    p.add_argument("--scales", default="2,3,4", help="comma-separated integer scales")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the table as JSON here")
    p.set_defaults(func=run)


def run(args) -> int:
    from ardet.files import atomic_write_json
    from sr import load_model
    from sr.evaluate import evaluate

    scales = [int(s) for s in args.scales.split(",")]
    if min(scales) < 1:
        raise ValueError(f"--scales must be positive integers, got {args.scales}")
    rows = evaluate(load_model(args.model, args.device), args.data, scales, progress=True)
    print(f"{'scale':>5} {'images':>6} {'LIIF Y':>8} {'bicubic Y':>9} {'LIIF RGB':>9} {'bicubic RGB':>11}")
    for r in rows:
        print(f"{'x' + str(r['scale']):>5} {r['images']:>6} {r['liif_y']:8.2f} {r['bicubic_y']:9.2f} "
              f"{r['liif_rgb']:9.2f} {r['bicubic_rgb']:11.2f}")
    if args.json:
        atomic_write_json(args.json, {"model": args.model, "data": str(args.data), "rows": rows})
    return 0
