"""``ardet detect``: run a detector on images at a chosen input size; COCO-format results, optional drawing."""
from pipeline.cli import add_command


def add_parser(sub) -> None:
    p = add_command(sub, "detect", "detect objects in images with a DETR-family detector; boxes in original pixels",
                    "ardet detect photo.jpg --detector facebook/detr-resnet-50 --draw photo-dets.png\n"
                    "ardet detect a.jpg b.jpg --size 480 --threshold 0.5 --out dets.json\n"
                    "ardet detect img.png --detector runs/tiny-conditional-detr --scale 1.5 --categories val.json")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--detector", default="facebook/detr-resnet-50",
                   help="hub id (online), model folder (save_pretrained or train-detector output), or YAML config")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, default=800,
                      help="shortest edge of the detector input, longest capped at --max-size (DETR's rule)")
    size.add_argument("--scale", type=float, help="input size = original size x SCALE instead of --size")
    p.add_argument("--max-size", type=int, default=1333, help="longest edge cap with --size")
    p.add_argument("--threshold", type=float, default=0.5, help="keep detections scoring above this")
    p.add_argument("--top-k", type=int, default=100, help="at most this many detections per image")
    p.add_argument("--categories", help="COCO JSON whose categories the detector's classes are mapped to")
    p.add_argument("--out", help="write COCO results JSON here (default: print to stdout)")
    p.add_argument("--draw", help="draw boxes: an image file for one input, else a folder (one PNG per input)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    import sr
    from ardet.files import atomic_write_json
    from ardet.images import load_image
    from detector import detr_target_size, load_detector

    categories = json.loads(Path(args.categories).read_text())["categories"] if args.categories else None
    if args.scale is not None and args.scale <= 0:
        raise ValueError(f"--scale must be positive, got {args.scale}")
    det = load_detector(args.detector, device=args.device, threshold=args.threshold, top_k=args.top_k,
                        categories=categories)
    names = {c["id"]: c["name"] for c in categories} if categories else \
        {det.label_map[i]: det.model.config.id2label[i] for i in det.label_map}
    results = []
    for n, path in enumerate(args.images):
        image = load_image(path)
        h, w = image.size
        if args.scale is not None:
            size = (max(1, round(h * args.scale)), max(1, round(w * args.scale)))
        else:
            size = detr_target_size(h, w, args.size, args.max_size)
        pixels = sr.resize(image.pixels[None], size)[0]
        dets = det.detect([pixels], [image.size])[0]
        image_id = int(image.id) if str(image.id).isdigit() else image.id
        results += dets.to_coco(image_id)
        if args.draw:
            target = Path(args.draw) if len(args.images) == 1 else Path(args.draw) / f"{Path(path).stem}.png"
            draw_detections(image.pixels, dets, names, target)
    if args.out:
        atomic_write_json(args.out, results)
        print(f"{len(results)} detections in {len(args.images)} image(s) -> {args.out}")
    else:
        print(json.dumps(results, indent=1))
    return 0


def draw_detections(pixels, dets, names: dict[int, str], path) -> None:
    """Save the image with each box and its ``name score`` label."""
    from pathlib import Path

    from PIL import Image, ImageDraw

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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
