"""Detection on exactly the pixels the pipeline chose: normalise and pad only, decode boxes into original pixels.

The model sees each image at the size it is handed (no second resize). DETR-family models predict boxes normalised
to the unpadded image, so a normalised box times the ORIGINAL size is the box in original pixels, whatever size the
model saw: the pipeline's resize is a per-axis scale of the original.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ardet.device import resolve_device
from ardet.images import IMAGENET_MEAN, IMAGENET_STD, check_pixels


# Model types whose boxes are normalised to the whole (padded) input rather than to the unpadded image.
_PADDED_CANVAS_BOXES = {"rt_detr", "rt_detr_v2", "d_fine"}


def detr_target_size(h: int, w: int, shortest_edge: int = 800, longest_edge: int = 1333) -> tuple[int, int]:
    """The (H, W) DetrImageProcessor resizes an h x w image to: shortest edge to ``shortest_edge`` unless the longest
    would pass ``longest_edge``; the other edge truncated, exactly as transformers' ``get_size_with_aspect_ratio``,
    except that no edge is 0 (transformers' size for images over 2 x ``longest_edge`` times longer than wide)."""
    size, raw = shortest_edge, None
    short, long = float(min(h, w)), float(max(h, w))
    if long / short * size > longest_edge:
        raw = longest_edge * short / long
        size = int(round(raw))
    if (h <= w and h == size) or (w <= h and w == size):
        return h, w
    base = size if raw is None else raw
    target = (int(base * h / w), size) if w < h else (size, int(base * w / h))
    return max(1, target[0]), max(1, target[1])


def normalize_and_pad(images: list[torch.Tensor], mean, std, device: str | torch.device | None = None,
                      memory_format: torch.memory_format = torch.contiguous_format
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise each ``[3, H, W]`` image in [0, 1] and pad the batch bottom/right with zeros (DETR's convention);
    ``pixel_mask`` is 1 on real pixels. Returns ``(pixel_values [B, 3, H, W], pixel_mask [B, H, W])`` on ``device``
    (default: where the images are, so a GPU pipeline stays on the GPU), ``pixel_values`` in ``memory_format``."""
    device = torch.device(device) if device is not None else images[0].device
    mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
    height = max(int(im.shape[-2]) for im in images)
    width = max(int(im.shape[-1]) for im in images)
    pixel_values = torch.empty(len(images), 3, height, width, device=device, memory_format=memory_format).zero_()
    pixel_mask = torch.zeros(len(images), height, width, dtype=torch.int64, device=device)
    for i, im in enumerate(images):
        check_pixels(im, 3, "detector")
        h, w = im.shape[-2:]
        pixel_values[i, :, :h, :w] = (im.to(device, torch.float32) - mean) / std
        pixel_mask[i, :h, :w] = 1
    return pixel_values, pixel_mask


@dataclass(frozen=True)
class Detections:
    """One image's detections: COCO ``[x, y, w, h]`` boxes in original-image pixels, scores, dataset category ids."""

    boxes: torch.Tensor  # float32 [N, 4]
    scores: torch.Tensor  # float32 [N]
    category_ids: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return int(self.scores.numel())

    def to_coco(self, image_id: int | str) -> list[dict]:
        return [{"image_id": image_id, "category_id": int(c), "bbox": [float(v) for v in b], "score": float(s)}
                for b, s, c in zip(self.boxes.tolist(), self.scores.tolist(), self.category_ids.tolist())]

    @staticmethod
    def empty() -> "Detections":
        return Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))


class Detector:
    """A transformers object-detection model with its label map and decoding settings.

    ``label_map`` maps the model's label index to the dataset category id; labels outside it are never output.
    """

    def __init__(self, model: torch.nn.Module, label_map: dict[int, int], *, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 threshold: float = 0.0, top_k: int = 100, device: str | torch.device = "cpu"):
        if not label_map:
            raise ValueError("the detector has no output class mapped to a dataset category")
        if not (0 <= threshold <= 1 and top_k >= 1):  # NaN fails too: it would silently keep nothing
            raise ValueError(f"detector: need a score threshold in [0, 1] and top_k >= 1, got {threshold}, {top_k}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.label_map = dict(label_map)
        self.threshold, self.top_k = float(threshold), int(top_k)
        self.mean, self.std = tuple(mean), tuple(std)
        self.boxes_on_padded_canvas = getattr(model.config, "model_type", "") in _PADDED_CANVAS_BOXES
        num_labels = model.config.num_labels
        self._category_of_label = torch.full((num_labels,), -1, dtype=torch.int64)
        for label, category in self.label_map.items():
            self._category_of_label[label] = category

    @property
    def category_ids(self) -> list[int]:
        return sorted(set(self.label_map.values()))

    def preprocess(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        # channels-last for inference on the CPU: the backbone's max-pool and convolutions run 1.1-1.6x faster per
        # forward (bench/bench_detector.py), the values are the same; training keeps the default layout
        layout = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        return normalize_and_pad(images, self.mean, self.std, self.device, layout)

    @torch.no_grad()
    def count_flops(self, size: tuple[int, int]):
        """FLOPs of one forward pass at input ``size`` (H, W), by ``ardet.flops`` (CPU attention included)."""
        from ardet.flops import count_flops

        pixel_values, pixel_mask = self.preprocess([torch.zeros(3, *size, device=self.device)])
        return count_flops(self.model, pixel_values=pixel_values, pixel_mask=pixel_mask)[1]

    @torch.inference_mode()
    def detect(self, images: list[torch.Tensor], original_sizes: list[tuple[int, int]]) -> list[Detections]:
        """Detect on ``images`` (already at the size the pipeline chose); boxes come back in ``original_sizes``."""
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            raise ValueError("detector: images must be a list of [3, H, W] tensors (or a [B, 3, H, W] batch), got one "
                             "[3, H, W] tensor: wrap it in a list")
        if len(images) != len(original_sizes) or not all(
                isinstance(s, (tuple, list, torch.Size)) and len(s) == 2 and all(int(v) == v > 0 for v in s)
                for s in original_sizes):
            raise ValueError(f"detector: need one (H, W) original size of positive integers per image, got "
                             f"{len(images)} images and original_sizes={original_sizes!r}")
        if len(images) == 0:  # a [B, 3, H, W] batch is a sequence of images too
            return []
        pixel_values, pixel_mask = self.preprocess(images)
        out = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        boxes = out.pred_boxes.float().cpu()
        if self.boxes_on_padded_canvas:  # re-normalise to each unpadded image
            canvas = torch.tensor(pixel_values.shape[-2:], dtype=torch.float32)
            sizes = torch.tensor([im.shape[-2:] for im in images], dtype=torch.float32)
            ratio = (canvas / sizes).flip(-1)  # (W_pad / W, H_pad / H)
            boxes = boxes * ratio.repeat(1, 2)[:, None, :]
        return [self.decode(lg, bx, size) for lg, bx, size in zip(out.logits.float().cpu(), boxes, original_sizes)]

    def decode(self, logits: torch.Tensor, boxes: torch.Tensor, original_size: tuple[int, int]) -> Detections:
        """One image's ``logits [Q, C(+1)]`` and normalised ``cxcywh`` boxes ``[Q, 4]`` -> :class:`Detections`.

        DETR (a trailing "no object" logit) scores each query by its best softmax class; the focal-loss family
        (Conditional/Deformable DETR, RT-DETR) scores every (query, class) pair by sigmoid and keeps the top k pairs,
        as transformers' own post-processing does. Unmapped classes, non-finite scores or boxes, and boxes that are
        empty inside the image never leave.
        """
        num_labels = self._category_of_label.numel()
        if logits.shape[-1] == num_labels + 1:
            best, label = logits.softmax(-1)[:, :-1].max(-1)
            scores = torch.full((logits.shape[0], num_labels), -math.inf)
            scores.scatter_(1, label[:, None], best[:, None])
        else:
            scores = logits.sigmoid()
        valid = (self._category_of_label >= 0)[None, :] & torch.isfinite(boxes).all(-1, keepdim=True)
        scores = torch.where(valid & torch.isfinite(scores), scores, -math.inf).flatten()
        top = scores.topk(min(self.top_k, scores.numel()))
        keep = top.values > self.threshold
        score, index = top.values[keep], top.indices[keep]
        query, label = index // num_labels, index % num_labels

        h, w = original_size
        cx, cy, bw, bh = boxes[query].unbind(-1)
        x0 = ((cx - bw / 2) * w).clamp(0, w)
        y0 = ((cy - bh / 2) * h).clamp(0, h)
        x1 = ((cx + bw / 2) * w).clamp(0, w)
        y1 = ((cy + bh / 2) * h).clamp(0, h)
        xywh = torch.stack([x0, y0, x1 - x0, y1 - y0], -1)
        nonempty = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
        return Detections(xywh[nonempty].float(), score[nonempty].float(), self._category_of_label[label[nonempty]])
