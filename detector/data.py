"""COCO-format detection data for training: images, box-aware augmentation, DETR targets, padded batches."""
from __future__ import annotations

from pathlib import Path

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ardet.coco import check_image_files as check_listed_files, load_coco_json
from ardet.images import load_image
from detector.config import TrainConfig


def augmentation(cfg: TrainConfig) -> v2.Compose:
    """Flip, colour jitter and a random shortest edge over ``scale_range`` (so the detector sees the range of sizes
    the scale predictor may pick); boxes follow every geometric step, and boxes emptied by it are dropped."""
    lo, hi = cfg.scale_range
    return v2.Compose([
        v2.RandomHorizontalFlip(cfg.hflip),
        v2.ColorJitter(cfg.color_jitter, cfg.color_jitter, cfg.color_jitter),
        v2.RandomShortestSize(sorted({*range(lo, hi + 1, 8), hi}), max_size=cfg.max_size, antialias=True),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=1.0),
    ])


def check_image_files(coco: dict, image_dir: Path, json_path) -> None:
    """Every image a COCO dict lists is in ``image_dir``, and there is one at least."""
    if not coco["images"]:
        raise ValueError(f"{json_path}: no images")
    check_listed_files(coco["images"], image_dir, json_path)


class CocoDetection(torch.utils.data.Dataset):
    """Item ``(index, seed)`` -> (image ``[3, H, W]`` in [0, 1], DETR target). The seed fixes the augmentation, so a
    run is reproducible and resumes exactly whatever the worker count.

    Targets are what transformers' DETR losses take: ``class_labels`` (model label indices) and ``boxes``
    (cx, cy, w, h) normalised to the unpadded image, the frame DETR predicts in. Crowd boxes are not trained on.
    """

    def __init__(self, json_path: str | Path, image_dir: str | Path, label_of_category: dict[int, int],
                 transform: v2.Transform | None = None):
        coco = load_coco_json(json_path)
        self.image_dir = Path(image_dir)
        self.images = sorted(coco["images"], key=lambda im: im["id"])
        self.boxes: dict[int, list] = {im["id"]: [] for im in self.images}
        for a in coco["annotations"]:
            if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0:
                self.boxes[a["image_id"]].append((a["bbox"], label_of_category[a["category_id"]]))
        # Found now, not when a batch first draws the image hours into a run (or never: no box to learn from).
        if not any(self.boxes.values()):
            raise ValueError(f"{json_path}: no image has a non-crowd box to train on")
        check_image_files(coco, self.image_dir, json_path)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, dict]:
        index, seed = key
        info = self.images[index]
        pixels = load_image(self.image_dir / info["file_name"]).pixels
        anns = self.boxes[info["id"]]
        sample = {"image": tv_tensors.Image(pixels),
                  "boxes": tv_tensors.BoundingBoxes(torch.tensor([b for b, _ in anns], dtype=torch.float32).view(-1, 4),
                                                    format="XYWH", canvas_size=pixels.shape[-2:]),  # int: v2 truncates
                  "labels": torch.tensor([c for _, c in anns], dtype=torch.int64)}
        if self.transform is not None:
            torch.default_generator.manual_seed(seed)  # v2 draws from it (torch.manual_seed also seeds CUDA: slow)
            sample = self.transform(sample)
        image = sample["image"].as_subclass(torch.Tensor).clamp(0, 1)
        h, w = image.shape[-2:]
        xywh = sample["boxes"].as_subclass(torch.Tensor).float().reshape(-1, 4)
        cxcywh = torch.cat([xywh[:, :2] + xywh[:, 2:] / 2, xywh[:, 2:]], 1) / torch.tensor([w, h, w, h])
        return image, {"class_labels": sample["labels"], "boxes": cxcywh}


class StepSampler(torch.utils.data.Sampler):
    """Batches of ``(index, seed)`` for steps ``start..steps-1``: a fresh seeded permutation each epoch, so step s
    always gets the same images and augmentations (exact resume)."""

    def __init__(self, num_items: int, batch_size: int, steps: int, start: int = 0, seed: int = 0):
        self.n, self.batch, self.steps, self.start, self.seed = num_items, batch_size, steps, start, seed

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self):
        per_epoch = max(1, self.n // self.batch)
        for step in range(self.start, self.steps):
            epoch, i = divmod(step, per_epoch)
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            picks = order[i * self.batch:(i + 1) * self.batch].tolist()
            yield [(index, self.seed * 1_000_003 + step * self.batch + j) for j, index in enumerate(picks)]
