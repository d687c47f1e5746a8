"""Is a small model's gap to the official LIIF a matter of fit or of data? The same benchmark protocol as
`ardet sr-eval` (Y-PSNR, PIL-bicubic LR) on the photos the SR configs train on (their centre crops, as trained; the
generated images left out) and on an evaluation set, for the students and the teacher:

    OMP_NUM_THREADS=1 .venv/bin/python bench/sr_train_fit.py --data ../shared/data/sr/Set5 \
        --json docs/data/sr-models/train-fit.json

A student as far below the teacher on its own training photos as on Set5 is limited by what it can fit (capacity or
optimisation), not by having seen too few images.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from PIL import Image

import sr
from ardet.config import load_config
from sr.evaluate import evaluate
from sr.train import Config, load_images


def write_training_photos(config: str, folder: Path) -> int:
    """The HR training images of ``config`` that come from files (not the generated ones) as PNG in ``folder``."""
    data = replace(load_config(Config, config).data, synthetic=0)
    images = load_images(data)
    for i, image in enumerate(images):
        Image.fromarray(image.mul(255).round().byte().permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    return len(images)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/sr/liif-mini.yaml", help="whose data section names the photos")
    p.add_argument("--data", required=True, help="an evaluation folder, e.g. ../shared/data/sr/Set5")
    p.add_argument("--students", default="liif-nano,liif-micro,liif-mini")
    p.add_argument("--teacher", default="liif-edsr-baseline")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photos = write_training_photos(args.config, Path(tmp))
        for name in [*args.students.split(","), args.teacher]:
            model = sr.load_model(name)
            train, held_out = (evaluate(model, folder, (args.scale,))[0] for folder in (tmp, args.data))
            rows.append({"model": name, "train_photos_y": train["liif_y"], "eval_y": held_out["liif_y"],
                         "train_bicubic_y": train["bicubic_y"], "eval_bicubic_y": held_out["bicubic_y"]})
    teacher = rows[-1]
    print(f"x{args.scale} Y-PSNR: {photos} training photos of {args.config} vs {args.data}; teacher {teacher['model']}\n")
    print("| model | training photos | below the teacher | eval set | below the teacher |")
    print("| --- | --- | --- | --- | --- |")
    for r in [{"model": "bicubic", "train_photos_y": teacher["train_bicubic_y"],
               "eval_y": teacher["eval_bicubic_y"]}] + rows:
        print(f"| {r['model']} | {r['train_photos_y']:.2f} | {teacher['train_photos_y'] - r['train_photos_y']:.2f} | "
              f"{r['eval_y']:.2f} | {teacher['eval_y'] - r['eval_y']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "config": args.config,
                                               "data": args.data, "scale": args.scale, "photos": photos,
                                               "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
