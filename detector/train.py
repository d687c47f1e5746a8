"""Train or fine-tune a DETR-family detector on a COCO-format dataset.

AdamW with its own backbone learning rate, gradient clipping, a 10x learning-rate drop late in training (DETR's
schedule), periodic COCO validation, atomic checkpoints that are plain transformers model folders (so
``load_detector(out_dir)`` loads the best one), and exact resume.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

from ardet.coco import evaluate_bbox, load_coco_json
from ardet.config import check_resume, resume_key, save_config
from ardet.device import resolve_device
from ardet.files import JsonlWriter, atomic_write_json, load_torch_checkpoint, truncate_jsonl
from ardet.images import IMAGENET_MEAN, IMAGENET_STD, load_image
from detector.config import DetectorConfig
from detector.data import CocoDetection, StepSampler, augmentation, check_image_files
from detector.detect import Detector, detr_target_size, normalize_and_pad
from detector.model import (BEST, LAST, build_model, in_backbone, load_model, map_labels, set_trainable,
                            use_trainable_batchnorm)

log = logging.getLogger(__name__)

# ardet.coco.STAT_NAMES under the names train_log.jsonl and best/metrics.json have always used.
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
TRAIN_STATE = "train_state.pt"
# What a resumed run may set differently: more steps, validation and checkpoint intervals, loaders, threads, device.
_MAY_CHANGE = ("train.steps", "train.val_every", "train.checkpoint_every", "train.workers", "train.threads",
               "train.device", "train.resume", "train.out_dir")


def train_detector(cfg: DetectorConfig, progress: bool = True) -> dict:
    """Run training as ``cfg`` says; returns ``{"step", "loss", "val"}`` (``val``: last COCO metrics, if any)."""
    from tqdm import tqdm

    t, data = cfg.train, cfg.data
    if t.threads:
        torch.set_num_threads(t.threads)
    out = Path(t.out_dir)
    categories = load_coco_json(data.train_json)["categories"]
    resume_dir = next((d for d in (out / LAST, out / f".{LAST}.old") if (d / TRAIN_STATE).is_file()), None)
    resume_dir = resume_dir if t.resume else None
    torch.manual_seed(t.seed)
    model, mean, std = _initial_model(cfg, categories, resume_dir)
    label_map = map_labels(model.config.id2label, categories)
    model.config.category_ids = {str(label): category for label, category in label_map.items()}  # saved with it
    if cfg.model.backbone.trainable_batchnorm and not t.freeze_backbone:
        use_trainable_batchnorm(model)
    set_trainable(model, t.freeze_backbone)
    device = resolve_device(t.device, "train.device")
    model.to(device)

    backbone = [p for n, p in model.named_parameters() if p.requires_grad and in_backbone(n)]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not in_backbone(n)]
    optimizer = torch.optim.AdamW([{"params": rest, "lr": t.lr}, {"params": backbone, "lr": t.backbone_lr}],
                                  weight_decay=t.weight_decay)
    # On the CPU first: a GPU run's optimizer state resumes anywhere (load_state_dict moves it to the parameters).
    state = load_torch_checkpoint(resume_dir / TRAIN_STATE, "cpu") if resume_dir is not None else None
    drop_at = int(t.steps * t.lr_drop_at) if t.lr_drop_at < 1 else math.inf
    if state is not None and state["step"] >= state["lr_drop_step"]:
        drop_at = state["lr_drop_step"]  # a drop already taken (or due next step) stays put when train.steps rises
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.1 if step >= drop_at else 1.0)
    start, best_ap = 0, -1.0
    if state is not None:
        check_resume(state["config"], resume_key(cfg, _MAY_CHANGE), resume_dir / TRAIN_STATE)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best_ap = int(state["step"]), float(state["best_ap"])
        log.info("resuming %s at step %d", resume_dir, start)

    train_set = CocoDetection(data.train_json, data.train_images, {c: l for l, c in label_map.items()},
                              augmentation(t))
    if data.val_json:  # now, not at the first validation
        val = load_coco_json(data.val_json)
        check_image_files(val, data.val_images, data.val_json)
        if sorted((c["id"], c["name"]) for c in val["categories"]) != sorted((c["id"], c["name"]) for c in categories):
            raise ValueError(f"{data.val_json}: its categories (id, name) differ from {data.train_json}'s: validation "
                             f"would score the model's classes against other ids; give both the same categories")
    loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=StepSampler(len(train_set), t.batch_size, t.steps, start, t.seed),
        num_workers=t.workers, collate_fn=_as_list)
    detector = Detector(model, label_map, mean=mean, std=std, device=device)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    truncate_jsonl(out / "train_log.jsonl", start)

    metrics, loss_avg, step = {}, math.nan, start
    with JsonlWriter(out / "train_log.jsonl") as history, \
            tqdm(total=t.steps, initial=start, desc="train-detector", disable=not progress, unit="step") as bar:
        for step, batch in enumerate(loader, start + 1):
            model.train()
            torch.manual_seed(t.seed * 1_000_003 + step)  # dropout etc.: the same on resume
            pixel_values, pixel_mask = normalize_and_pad([im for im, _ in batch], mean, std)
            labels = [{k: v.to(device) for k, v in target.items()} for _, target in batch]
            output = model(pixel_values=pixel_values.to(device), pixel_mask=pixel_mask.to(device), labels=labels)
            loss = output.loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"step {step}: loss is {loss.item()}; lower train.lr or train.clip_grad")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            loss_avg = loss.item() if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * loss.item()
            bar.set_postfix(loss=f"{loss_avg:.3f}", AP=f"{metrics.get('AP', math.nan):.3f}")
            bar.update()
            history.write({"step": step, "loss": loss.item(), "lr": lr,
                           "grad_norm": float(grad_norm) if torch.isfinite(grad_norm) else None,
                           **{k: float(v.detach()) for k, v in output.loss_dict.items() if not k[-1].isdigit()}})
            if data.val_json and (step % t.val_every == 0 or step == t.steps):
                metrics = evaluate(detector, data.val_json, data.val_images, t.val_size, t.max_size)
                history.write({"step": step, "val": metrics})
                log.info("step %d: val AP %.4f AP50 %.4f", step, metrics["AP"], metrics["AP50"])
                if metrics["AP"] > best_ap:
                    best_ap = metrics["AP"]
                    save_model(model, out / BEST, mean, std, extra={"metrics.json": {"step": step, **metrics}})
            if step % t.checkpoint_every == 0 or step == t.steps:
                state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                         "best_ap": best_ap, "lr_drop_step": drop_at, "config": resume_key(cfg, _MAY_CHANGE)}
                save_model(model, out / LAST, mean, std, train_state=state)
    return {"step": step, "loss": loss_avg, "val": metrics}


def _initial_model(cfg: DetectorConfig, categories: list[dict], resume_dir: Path | None):
    """The checkpoint to resume, else the model to fine-tune (re-headed if its classes differ), else a new one."""
    if resume_dir is not None:
        return load_model(str(resume_dir))
    if not cfg.train.init:
        return build_model(cfg.model, categories), IMAGENET_MEAN, IMAGENET_STD
    model, mean, std = load_model(cfg.train.init)
    try:
        map_labels(model.config.id2label, categories)
    except ValueError:
        log.warning("%s has other classes than the dataset: training a new class head", cfg.train.init)
        model, mean, std = load_model(cfg.train.init, id2label={i: c["name"] for i, c in enumerate(categories)})
    return model, mean, std


def _as_list(batch: list) -> list:
    return batch


def save_model(model: torch.nn.Module, dest: Path, mean, std, train_state: dict | None = None,
               extra: dict[str, dict] | None = None) -> None:
    """Write a complete model folder next to ``dest`` and swap it in with renames: a crash leaves the old folder
    (or ``.NAME.old``) whole, never a half-written one. BatchNorm batch counters are dropped so the folder loads
    into transformers' frozen BatchNorm without warnings."""
    tmp, old = dest.with_name(f".{dest.name}.tmp"), dest.with_name(f".{dest.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    model.save_pretrained(tmp, state_dict=state)
    atomic_write_json(tmp / "preprocessor_config.json",
                      {"do_normalize": True, "image_mean": list(mean), "image_std": list(std)})
    for name, obj in (extra or {}).items():
        atomic_write_json(tmp / name, obj)
    if train_state is not None:
        torch.save(train_state, tmp / TRAIN_STATE)
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


@torch.inference_mode()
def evaluate(detector: Detector, json_path: str, image_dir: str, short: int, max_size: int) -> dict[str, float]:
    """COCO metrics of ``detector`` on a COCO-format set, each image resized by DETR's rule to ``short``; an area
    range without ground truth (pycocotools' -1) counts 0."""
    gt = load_coco_json(json_path)
    detector.model.eval()
    results = []
    for info in gt["images"]:
        pixels = load_image(Path(image_dir) / info["file_name"]).pixels
        size = detr_target_size(*pixels.shape[-2:], short, max_size)
        resized = TF.resize(pixels, list(size), antialias=True).clamp(0, 1)
        results += detector.detect([resized], [tuple(pixels.shape[-2:])])[0].to_coco(info["id"])
    return {name: max(0.0, v) for name, v in zip(COCO_STATS, evaluate_bbox(gt, results).stats)}
