"""``ardet detect``: run a detector on images at a chosen input size; COCO-format results, optional drawing."""
import sys

from pipeline.cli import add_command, check_not_inputs


def add_parser(sub) -> None:
    p = add_command(sub, "detect", "detect objects in images with a DETR-family detector at the input size a policy "
                    "chooses (fixed, adaptive or cascade); boxes in original pixels",
                    "ardet detect photo.jpg --detector facebook/detr-resnet-50 --draw photo-dets.png\n"
                    "ardet detect a.jpg b.jpg --size 480 --threshold 0.5 --out dets.json\n"
                    "ardet detect img.png --detector runs/tiny-conditional-detr --scale 1.5 --categories val.json\n"
                    "ardet detect img.png --detector models/detector-demo --policy adaptive \\\n"
                    "    --predictor models/scale-predictor-demo/predictor.safetensors --knob 0.5\n"
                    "ardet detect img.png --detector models/detector-demo --policy cascade --low 128 --high 256")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--detector", default="facebook/detr-resnet-50",
                   help="hub id (online), model folder (save_pretrained or train-detector output), or YAML config")
    p.add_argument("--policy", choices=("fixed", "adaptive", "cascade"), default="fixed",
                   help="how each image's input size is chosen")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=int,
                      help="fixed: shortest edge of the detector input, longest capped at --max-size (DETR's rule; "
                           "default 800)")
    size.add_argument("--scale", type=float, help="fixed: input size = original size x SCALE instead of --size")
    p.add_argument("--max-size", type=int, help="longest edge cap with --size (and the cascade); default 1333")
    p.add_argument("--resampler", choices=("bilinear", "bicubic", "liif"), default="bilinear",
                   help="how images are resized; liif: --sr-model where the image grows")
    p.add_argument("--sr-model", help="LIIF model name or checkpoint for --resampler liif")
    p.add_argument("--sr-min-factor", type=float, default=1.0,
                   help="--resampler liif: use the model only for enlargements beyond this factor (bilinear below)")
    p.add_argument("--predictor", help="adaptive (and cascade second pass): scale predictor checkpoint")
    p.add_argument("--knob", type=float, help="trade-off knob in [0, 1] of a knob-conditioned predictor")
    p.add_argument("--low", type=int, help="cascade: first-pass short side (default 512)")
    p.add_argument("--high", type=int, help="cascade: second-pass short side, above --low (else --predictor decides, "
                                            "and a size no larger than --low keeps the first pass)")
    p.add_argument("--uncertainty", type=float,
                   help="cascade: re-run when 1 - mean top-5 score of the first pass reaches this (default 0.5)")
    p.add_argument("--threshold", type=float, default=0.5, help="keep detections scoring above this")
    p.add_argument("--top-k", type=int, default=100, help="at most this many detections per image")
    p.add_argument("--categories", help="COCO JSON whose categories the detector's classes are mapped to")
    p.add_argument("--out", help="write COCO results JSON here (default: print to stdout)")
    p.add_argument("--draw", help="draw boxes: an image file for one input, else a folder (one PNG per input)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    p.add_argument("--exif", choices=("ignore", "apply"), default="ignore",
                   help="apply: turn photos upright by their EXIF orientation first (boxes in the upright image); "
                        "ignore: the stored pixel grid, as COCO's annotations are")
    p.set_defaults(func=run)


# The options each policy reads; one given to a policy that ignores it is refused rather than silently unused.
_POLICY_OPTIONS = {"fixed": {"size", "scale", "max_size"}, "adaptive": {"predictor", "knob"},
                   "cascade": {"low", "high", "predictor", "knob", "max_size", "uncertainty"}}


def policy_entry(args) -> dict:
    """The policy config entry the command-line options describe."""
    given = {name for names in _POLICY_OPTIONS.values() for name in names if getattr(args, name) is not None}
    unused = sorted(given - _POLICY_OPTIONS[args.policy])
    if unused:
        raise ValueError(f"--policy {args.policy} does not use {', '.join('--' + n.replace('_', '-') for n in unused)}")
    if args.scale is not None and args.max_size is not None:  # a scale sets the whole size
        raise ValueError("--max-size does not apply with --scale (the size is the original's times the scale)")
    resample = {"resampler": args.resampler, "sr_model": args.sr_model, "sr_min_factor": args.sr_min_factor}
    if args.policy == "fixed":
        entry = {"short": args.size, "max_size": args.max_size, "scale": args.scale}
    elif args.policy == "adaptive":
        entry = {"predictor": args.predictor, "knob": args.knob}
    else:
        entry = {"low": args.low, "high": args.high, "predictor": args.predictor, "knob": args.knob,
                 "max_size": args.max_size, "threshold": args.uncertainty}
    # options not given take the policy's own defaults (pipeline.policies' FixedOptions, CascadeOptions)
    return {"kind": args.policy, **{k: v for k, v in {**entry, **resample}.items() if v is not None}}


def run(args) -> int:
    import json

    from ardet.files import atomic_write_json
    from ardet.images import ImageDecodeError
    from pipeline import AdaptivePipeline

    if args.policy == "adaptive" and not args.predictor:
        raise ValueError("--policy adaptive needs --predictor (a scale predictor checkpoint)")
    image_ids, targets = check_outputs(args)
    pipe = AdaptivePipeline.from_config({
        "detector": {"spec": args.detector, "threshold": args.threshold, "top_k": args.top_k},
        "policy": policy_entry(args), "categories": args.categories, "device": args.device, "exif": args.exif})
    results, failed = [], []
    for path, image_id, target in zip(args.images, image_ids, targets):
        try:
            image = pipe.load(path)
        except (ImageDecodeError, FileNotFoundError) as e:  # one unreadable file does not cost the others' results
            print(f"ardet detect: error: {e}", file=sys.stderr)
            failed.append(path)
            continue
        result = pipe(image)
        results += result.detections.to_coco(image_id)
        print(f"{path}: {len(result.detections)} detections at {result.size[0]}x{result.size[1]} "
              f"({result.resampler}), {sum(result.flops.values()) / 1e9:.2f} GFLOPs", file=sys.stderr)
        if target:
            draw_detections(image.pixels, result.detections, pipe.category_names, target)
    done = len(args.images) - len(failed)
    if args.out:
        atomic_write_json(args.out, results)
        print(f"{len(results)} detections in {done} image(s) -> {args.out}")
    else:
        print(json.dumps(results, indent=1))
    if failed:
        print(f"ardet detect: error: {len(failed)} of {len(args.images)} image(s) could not be read: "
              f"{', '.join(failed)}", file=sys.stderr)
        return 2
    return 0


def check_outputs(args) -> tuple[list, list]:
    """Each input's image id (its file stem; an integer when all digits, as COCO ids are) and drawing path, checked
    before any work: two inputs may not share an id, and the outputs must be writable files."""
    from pathlib import Path

    from PIL import Image

    from ardet.images import check_unique_ids, file_image_id

    stems = [Path(p).stem for p in args.images]
    image_ids = [file_image_id(p) for p in args.images]  # equal stems give equal ids: one check covers both
    check_unique_ids(image_ids, "results and drawings are named by the file name; rename or run them separately")
    if args.out and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a JSON file path")
    for option, path in (("--out", args.out), ("--draw", args.draw)):
        blocking = next((p for p in Path(path or ".").parents if p.exists() and not p.is_dir()), None)
        if path and blocking is not None:
            raise ValueError(f"{option} {path}: {blocking} is a file, so nothing can be written below it")
    if not args.draw:
        targets = [None] * len(stems)
    elif len(args.images) > 1:
        if Path(args.draw).is_file():
            raise ValueError(f"--draw {args.draw} is a file; with several inputs it names a folder")
        targets = [Path(args.draw) / f"{s}.png" for s in stems]
    elif Path(args.draw).suffix.lower() not in Image.registered_extensions() or Path(args.draw).is_dir():
        raise ValueError(f"--draw {args.draw}: with one input it names an image file, e.g. dets.png")
    else:
        targets = [Path(args.draw)]
    check_not_inputs([("--out", args.out), *(("--draw", t) for t in targets)], args.images)
    return image_ids, targets


def draw_detections(pixels, dets, names: dict[int, str], path) -> None:
    """Save the image with each box and its ``name score`` label (atomically: no half-written file on a kill)."""
    from PIL import Image, ImageDraw

    from ardet.files import atomic_write_image

    image = Image.fromarray((pixels.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy())
    draw = ImageDraw.Draw(image)
    palette = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]
    for (x, y, w, h), score, cid in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.category_ids.tolist()):
        colour = palette[cid % len(palette)]
        draw.rectangle((x, y, x + w, y + h), outline=colour, width=2)
        label = f"{names.get(cid, cid)} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x, y), label)
        draw.rectangle((left, top, right, bottom), fill=colour)
        draw.text((x, y), label, fill=(255, 255, 255))
    atomic_write_image(path, image)
