"""COCOeval time per backend on a COCO-sized problem, and the eval harness's own overhead per image.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_coco_eval.py                      # 5000 images x 100 detections
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_coco_eval.py --images 500 --overhead-images 50   # quick

1. COCOeval bbox (evaluate + accumulate + summarize, through ``eval.evaluate_bbox``) of ``--images`` images with
   ~7 ground-truth boxes over 80 categories and ``--dets`` detections each (jittered truths plus random boxes),
   with pycocotools and faster-coco-eval; prints both times and the largest difference between their 12 stats.
2. Harness overhead: ``eval.run_evaluation`` with a policy whose model calls cost nothing (it returns no detections)
   on ``--overhead-images`` generated 480x640 PNGs; everything measured is then the harness: image decoding,
   the JSONL record (fsynced), and the final merge + COCOeval, per image.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector import Detections  # noqa: E402
from eval import CocoDataset, ImageResult, evaluate_bbox, run_evaluation, validate_coco  # noqa: E402


def synthetic_problem(num_images: int, dets_per_image: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = random.Random(seed)
    categories = [{"id": i, "name": f"class{i}"} for i in range(1, 81)]
    images, anns, dets = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": 480, "width": 640})
        truths = []
        for _ in range(rng.randint(1, 13)):
            side = rng.choice([rng.uniform(8, 32), rng.uniform(32, 96), rng.uniform(96, 400)])
            w, h = side * rng.uniform(0.6, 1.6), side * rng.uniform(0.6, 1.6)
            box = [rng.uniform(0, 640 - min(w, 600)), rng.uniform(0, 480 - min(h, 440)), w, h]
            cat = rng.randint(1, 80)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": box,
                         "area": w * h, "iscrowd": 0})
            truths.append((box, cat))
        for k in range(dets_per_image):
            if k < len(truths) and rng.random() < 0.8:
                (x, y, w, h), cat = truths[k]
                box = [x + w * rng.uniform(-0.1, 0.1), y + h * rng.uniform(-0.1, 0.1), w * rng.uniform(0.85, 1.15),
                       h * rng.uniform(0.85, 1.15)]
            else:
                cat, box = rng.randint(1, 80), [rng.uniform(0, 600), rng.uniform(0, 440), rng.uniform(4, 200),
                                                rng.uniform(4, 200)]
            dets.append({"image_id": image_id, "category_id": cat, "bbox": box, "score": rng.random()})
    return validate_coco({"images": images, "annotations": anns, "categories": categories}), dets


class NoModelPolicy:
    """Costs nothing and finds nothing: what remains of a run's time is the harness's."""

    name = "no-model"

    def __call__(self, image) -> ImageResult:
        return ImageResult(Detections.empty(), image.size, 1.0, "none", {}, {})


def bench_backends(num_images: int, dets_per_image: int) -> None:
    gt, dets = synthetic_problem(num_images, dets_per_image)
    print(f"COCOeval bbox: {num_images} images, {len(gt['annotations'])} ground-truth boxes, {len(dets)} detections")
    results, seconds = {}, {}
    for backend in ("pycocotools", "faster-coco-eval"):
        start = time.perf_counter()
        try:
            results[backend] = evaluate_bbox(gt, dets, backend=backend)
        except ImportError:
            print(f"  {backend:17s} not installed")
            continue
        seconds[backend] = time.perf_counter() - start
        ratio = seconds["pycocotools"] / seconds[backend] if "pycocotools" in seconds else float("nan")
        print(f"  {backend:17s} {seconds[backend]:7.1f} s   {ratio:5.2f}x pycocotools' speed   "
              f"AP {results[backend]['AP']:.4f}")
    if len(results) == 2:
        a, b = results.values()
        print(f"  largest |difference| over the 12 stats: {max(abs(x - y) for x, y in zip(a.stats, b.stats)):.3g}")


def bench_overhead(num_images: int) -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "img").mkdir()
        gen = torch.Generator().manual_seed(0)
        images = []
        for i in range(1, num_images + 1):
            pixels = (torch.rand(480, 640, 3, generator=gen) * 255).byte().numpy()
            Image.fromarray(pixels).save(tmp / "img" / f"{i}.png")
            images.append({"id": i, "file_name": f"{i}.png", "height": 480, "width": 640})
        gt = {"images": images, "categories": [{"id": 1, "name": "a"}],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500}]}
        import json
        (tmp / "gt.json").write_text(json.dumps(gt))
        data = CocoDataset(tmp / "gt.json", tmp / "img")
        start = time.perf_counter()
        run_evaluation([NoModelPolicy()], data, tmp / "run", progress=False)
        total = time.perf_counter() - start
        records = [json.loads(line) for line in (tmp / "run" / "records.jsonl").read_text().splitlines()]
        decode = sum(r["load_seconds"] for r in records) / len(records)
    print(f"harness overhead on {num_images} 480x640 PNGs: {1e3 * total / num_images:.1f} ms per image in all, "
          f"of which image decoding {1e3 * decode:.1f} ms; the rest (records, fsync, merge, COCOeval) "
          f"{1e3 * (total / num_images - decode):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--overhead-images", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench_backends(args.images, args.dets)
    bench_overhead(args.overhead_images)


if __name__ == "__main__":
    main()
