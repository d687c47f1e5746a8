"""``ardet coco-eval``: evaluate an existing COCO results file, as a plain COCO evaluation script."""
from ardet.coco import BACKENDS
from pipeline.cli import add_command


def add_parser(sub) -> None:
    p = add_command(sub, "coco-eval", "COCO bbox evaluation of an existing detections file: the 12 COCOeval stats "
                    "and per-category AP",
                    "ardet coco-eval --gt instances_val2017.json --dets detections.json\n"
                    "ardet coco-eval --gt gt.json --dets dets.json --backend faster-coco-eval --json metrics.json")
    p.add_argument("--gt", required=True, help="COCO instances JSON (images, annotations, categories)")
    p.add_argument("--dets", required=True, help="COCO results JSON: a list of {image_id, category_id, bbox, score}")
    p.add_argument("--image-ids", help="evaluate only these images: a file with a JSON list or whitespace-separated "
                                       "ids (default: every image of --gt; images without detections are misses)")
    p.add_argument("--backend", default="pycocotools", choices=BACKENDS)
    p.add_argument("--json", dest="json_out", metavar="OUT", help='write {"stats": [12 numbers in pycocotools order], '
                                                                 '"per_category": [...], ...} to OUT')
    p.set_defaults(func=run)


def run(args) -> int:
    import logging

    from ardet.coco import evaluate_bbox, load_coco_json
    from ardet.files import atomic_write_json, read_json
    from eval.coco import read_image_ids

    gt = load_coco_json(args.gt)
    dets = read_json(args.dets, "detections file")
    image_ids = read_image_ids(args.image_ids) if args.image_ids else None
    metrics = evaluate_bbox(gt, dets, image_ids, backend=args.backend)
    evaluated = set(image_ids) if image_ids is not None else {img["id"] for img in gt["images"]}
    covered = len({d["image_id"] for d in dets} & evaluated)
    if covered < metrics.num_images:
        logging.getLogger(__name__).warning("detections cover %d of the %d evaluated images; the others count as "
                                            "misses", covered, metrics.num_images)
    print(f"{metrics.num_detections} detections on {metrics.num_images} images ({metrics.backend})")
    print(metrics.format())
    if args.json_out:
        atomic_write_json(args.json_out, metrics.to_dict())
    return 0
