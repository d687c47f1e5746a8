"""Training images for the scale predictor: a COCO JSON + images folder -> thumbnail, native size, boxes."""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from ardet.coco import load_coco_json
from ardet.images import LoadedImage, load_image
from scale_predictor.model import make_thumbnail


class CocoScaleData(torch.utils.data.Dataset):
    """Items are (index, seed) pairs so that augmentation is a pure function of the step (exact resume).

    Augmentation: horizontal flip of the thumbnail, and ``native_jitter`` = (lo, hi): the image is presented as if its
    native size were ``s`` times larger (s log-uniform in [lo, hi]), boxes scaled alike. The thumbnail barely changes
    while the absolute object sizes do, which is what teaches the head to use the native size. Use (1, 1) whenever
    labels were measured at the true native size (oracle mode).
    """

    def __init__(self, annotations: str | os.PathLike, images: str | os.PathLike, *, thumb: int = 224,
                 native_jitter: tuple[float, float] = (1.0, 1.0), flip: bool = True, max_images: int | None = None):
        self.images_dir = Path(images)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"images folder not found: {self.images_dir}")
        coco = load_coco_json(annotations)  # validated: unknown image or category ids, bad boxes are errors
        self.categories = coco["categories"]
        self.images = sorted(coco["images"], key=lambda im: im["id"])[:max_images]
        self.annotations = {im["id"]: [] for im in self.images}
        for a in coco["annotations"]:
            if a["image_id"] in self.annotations:
                self.annotations[a["image_id"]].append(a)
        lo, hi = native_jitter
        if not 0 < lo <= hi:
            raise ValueError(f"native_jitter must satisfy 0 < lo <= hi, got {native_jitter}")
        self.thumb, self.log_jitter, self.flip = thumb, (math.log(lo), math.log(hi)), flip

    def __len__(self) -> int:
        return len(self.images)

    def native_size(self, index: int) -> tuple[int, int]:
        return int(self.images[index]["height"]), int(self.images[index]["width"])

    def load(self, index: int) -> LoadedImage:
        info = self.images[index]
        image = load_image(self.images_dir / info["file_name"], image_id=info["id"])
        if image.size != self.native_size(index):
            raise ValueError(f"{info['file_name']}: image is {image.size} but the annotations say "
                             f"{self.native_size(index)} (h, w)")
        return image

    def boxes(self, index: int) -> torch.Tensor:
        """Non-crowd boxes, COCO xywh in native pixels, [N, 4]."""
        anns = [a["bbox"] for a in self.annotations[self.images[index]["id"]] if not a.get("iscrowd", 0)]
        return torch.tensor(anns, dtype=torch.float32).reshape(-1, 4)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        index, seed = item
        g = torch.Generator().manual_seed(seed)
        thumb = make_thumbnail(self.load(index).pixels, self.thumb)
        if self.flip and torch.rand((), generator=g) < 0.5:
            thumb = thumb.flip(-1)
        lo, hi = self.log_jitter
        scale = math.exp(lo + (hi - lo) * torch.rand((), generator=g).item())
        h, w = self.native_size(index)
        return {"index": index, "thumb": thumb, "native": torch.tensor([h * scale, w * scale]),
                "boxes": self.boxes(index) * scale}


def collate(items: list[dict]) -> dict:
    return {"index": torch.tensor([it["index"] for it in items]), "thumb": torch.stack([it["thumb"] for it in items]),
            "native": torch.stack([it["native"] for it in items]), "boxes": [it["boxes"] for it in items]}
