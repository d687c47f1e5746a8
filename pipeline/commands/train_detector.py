"""``ardet train-detector``: train or fine-tune a DETR-family detector on a COCO-format dataset."""
from pipeline.cli import add_command, add_config_args


def add_parser(sub) -> None:
    p = add_command(sub, "train-detector", "train or fine-tune a detector on COCO-format data (train/val JSON + "
                    "image folders); resumes from OUT_DIR/checkpoint, keeps the best model in OUT_DIR/best",
                    "ardet train-detector --config configs/detector/tiny-conditional-detr.yaml \\\n"
                    "    --set data.train_json=data/train.json --set data.train_images=data/train \\\n"
                    "    --set data.val_json=data/val.json --set data.val_images=data/val\n"
                    "ardet train-detector --config my.yaml --set train.init=facebook/detr-resnet-50 "
                    "--set train.freeze_backbone=true")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import math
    from pathlib import Path

    from ardet.config import load_config
    from detector.config import DetectorConfig
    from detector.train import train_detector

    cfg = load_config(DetectorConfig, args.config, args.overrides)
    for key in ("train_json", "train_images") + (("val_json", "val_images") if cfg.data.val_json else ()):
        value = getattr(cfg.data, key)
        if not value or not Path(value).exists():
            raise FileNotFoundError(f"data.{key} = {value!r} does not exist (set it with --set data.{key}=PATH)")
    result = train_detector(cfg)
    val = result["val"]
    if math.isnan(result["loss"]):  # no step ran: the checkpoint had reached train.steps already
        print(f"already trained for {result['step']} steps (raise train.steps to continue)")
    else:
        print(f"step {result['step']}: loss {result['loss']:.4f}"
              + (f", val AP {val['AP']:.4f} AP50 {val['AP50']:.4f}" if val else ""))
    print(f"model: {cfg.train.out_dir} (load with --detector {cfg.train.out_dir})")
    return 0
