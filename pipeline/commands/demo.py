"""``ardet demo``: the whole mission on a CPU with the project's own data and models (what ``make demo`` runs)."""
from pipeline.cli import add_command

SWEEP = "configs/sweep/demo.yaml"


def add_parser(sub) -> None:
    p = add_command(sub, "demo", "generate the synthetic test split, sweep every policy with the shipped small models, "
                    "write the trade-off report and example images, and upscale a real photo with the official LIIF",
                    "ardet demo\n"
                    "ardet demo --limit 20                    # into runs/demo-limit20")
    p.add_argument("--out", help="run folder (default: runs/demo, or runs/demo-limitN with --limit N, so a quick "
                   "run and the full one do not share a folder)")
    p.add_argument("--data", default="data/demo", help="where the synthetic data is generated")
    p.add_argument("--limit", type=int, help="evaluate only the first N test images")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ardet.config import ConfigError, override
    from ardet.synthetic import make_dataset
    from pipeline.cli import build_parser
    from pipeline.commands import sweep

    if not Path(SWEEP).is_file():
        raise FileNotFoundError(f"{SWEEP} not found: run `ardet demo` from the repository root, where configs/ and "
                                f"models/ (the shipped demo models) are")
    out = Path(args.out or ("runs/demo" if args.limit is None else f"runs/demo-limit{args.limit}"))
    make_dataset(args.data, seed=0, num_train=0, num_val=0, num_test=100, progress=not args.no_progress)
    overrides = [override("dataset.annotations", f"{args.data}/test/annotations.json"),
                 override("dataset.images", f"{args.data}/test/images")]
    resume = (out / "config.yaml").exists()  # a second `ardet demo` finishes or reuses the first run
    argv = ["sweep", "--config", SWEEP, "--out", str(out), *(f"--set={o}" for o in overrides),
            *(["--limit", str(args.limit)] if args.limit is not None else []), *(["--resume"] if resume else []),
            *(["--no-progress"] if args.no_progress else [])]
    try:
        sweep.run(build_parser().parse_args(argv))  # the sweep command's own parser: its options and defaults
    except ConfigError as e:
        raise ConfigError(f"{out} holds a run with other settings, which the demo would have continued ({e}); "
                          f"pass another --out, or remove {out}") from None
    draw_examples(out, Path(args.data) / "test")
    upscale_photo(out / "liif")
    print(f"\nreport: {out / 'report.md'}\nplot:   {out / 'pareto.png'}\nexamples: {out / 'examples'}/\n"
          f"official LIIF on a real photo: {out / 'liif'}/")
    return 0


def draw_examples(out, split_dir) -> None:
    """One test image of each kind (large, small, mixed objects), drawn at the sizes the fixed-192 and adaptive
    (knob 0) policies chose for it, with their 10 best detections."""
    import json

    from eval import CocoDataset
    from pipeline import AdaptivePipeline
    from pipeline.commands.detect import draw_detections

    gt = json.loads((split_dir / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in gt["categories"]}
    picks = [next(im for im in gt["images"] if im["kind"] == kind) for kind in ("large", "small", "mixed")]
    data = CocoDataset(split_dir / "annotations.json", split_dir / "images", image_ids=[im["id"] for im in picks])
    detector = {"spec": "models/detector-demo", "top_k": 10}  # this weak detector scores below 0.3
    pipelines = {
        "fixed192": {"kind": "fixed", "short": 192, "max_size": 512},
        "adaptive": {"kind": "adaptive", "predictor": "models/scale-predictor-demo/predictor.safetensors",
                     "resampler": "bilinear", "knob": 0.0}}
    for name, policy in pipelines.items():
        pipe = AdaptivePipeline.from_config({"detector": detector, "policy": policy,
                                             "categories": str(split_dir / "annotations.json")})
        for info in picks:
            image = data.load(info["id"])
            prep = pipe.preprocess(image)
            # Boxes "in original pixels" of an image whose original is the rendered one: drawn at the chosen size.
            at_size = pipe.detector.detect([prep.pixels], [prep.size])[0]
            hh, ww = prep.size
            draw_detections(prep.pixels, at_size, names, out / "examples" / f"{info['kind']}-{name}-{hh}x{ww}.png")


def upscale_photo(out, scale: float = 2.37) -> None:
    """A real photograph (matplotlib's bundled Grace Hopper portrait, cropped) upscaled by a non-integer factor with
    the official EDSR-baseline-LIIF weights, beside bicubic; skipped with a note if the weights were not pulled."""
    import matplotlib.cbook
    import torch
    from PIL import Image

    import sr
    from ardet.images import load_image

    try:
        model = sr.load_model("liif-edsr-baseline")
    except FileNotFoundError as e:
        print(f"skipping the official LIIF example: {e}")
        return
    photo = load_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    crop = photo.pixels[:, 150:310, 180:340][None]  # the face and glasses, 160x160
    size = (round(160 * scale), round(160 * scale))
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        outputs = {"liif": model.upscale(crop, size), "bicubic": sr.resize(crop, size, "bicubic"), "input": crop}
    for name, x in outputs.items():
        array = (x[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
        Image.fromarray(array).save(out / f"grace_hopper-{name}-{x.shape[-2]}x{x.shape[-1]}.png")
