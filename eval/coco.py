"""COCO-format datasets: an annotation JSON checked up front (:func:`ardet.coco.load_coco_json`), a folder of images,
and the subset to evaluate."""
from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path

from PIL import Image

from ardet.coco import check_image_files, load_coco_json
from ardet.images import LoadedImage, load_image


class CocoDataset:
    """A validated COCO annotation file, its image folder, and the ordered image ids selected for evaluation.

    The order is that of the JSON's ``images`` list (or of ``image_ids`` when given); ``limit`` keeps the first N.
    """

    def __init__(self, annotations: str | os.PathLike, images_dir: str | os.PathLike, *,
                 limit: int | None = None, image_ids: list[int] | None = None):
        self.annotations_path = Path(annotations)
        self.images_dir = Path(images_dir)
        self.gt = load_coco_json(self.annotations_path)
        self._images = {img["id"]: img for img in self.gt["images"]}
        if image_ids is not None:
            unknown = [i for i in image_ids if i not in self._images]
            if unknown:
                raise ValueError(f"image ids not in {self.annotations_path}: {unknown[:5]}"
                                 f"{' ...' if len(unknown) > 5 else ''}")
            if len(set(image_ids)) != len(image_ids):
                raise ValueError("the image id list has duplicates")
        ids = list(image_ids) if image_ids is not None else list(self._images)
        if limit is not None:
            if limit < 1:
                raise ValueError(f"limit must be >= 1, got {limit}")
            ids = ids[:limit]
        if not ids:
            raise ValueError(f"{self.annotations_path}: no images to evaluate")
        self.image_ids: tuple[int, ...] = tuple(ids)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.images_dir}")
        check_image_files([self._images[i] for i in ids], self.images_dir, self.annotations_path.name)
        for i in ids:  # from the file headers, before any record is written (a bad file fails at its load, clearly)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(self.image_path(i)) as im:
                        size = (im.height, im.width)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                continue
            self._check_size(i, size)

    def __len__(self) -> int:
        return len(self.image_ids)

    @functools.cached_property
    def fingerprint(self) -> dict:
        """The ground truth a run scores against: the annotation file and its sha256 (a resumed run checks it),
        hashed once per dataset (at the run's start and in its summary)."""
        from ardet.files import sha256

        return {"annotations": str(self.annotations_path), "annotations_sha256": sha256(self.annotations_path)}

    @property
    def categories(self) -> list[dict]:
        return self.gt["categories"]

    def image_path(self, image_id: int) -> Path:
        return self.images_dir / self._images[image_id]["file_name"]

    def load(self, image_id: int) -> LoadedImage:
        """Decode one image with the shared loader; its size is checked against the JSON's width/height."""
        image = load_image(self.image_path(image_id), image_id=image_id)
        self._check_size(image_id, image.size)
        return image

    def _check_size(self, image_id: int, size: tuple[int, int]) -> None:
        """The image's (h, w) against whichever of the JSON's height and width it gives."""
        info = self._images[image_id]
        for key, value in zip(("height", "width"), size):
            if info.get(key) is not None and info[key] != value:
                raise ValueError(f"{self.image_path(image_id)}: its size (h, w) {size} differs from the annotation "
                                 f"file's {key} {info[key]}; boxes would not line up")


def read_image_ids(path: str | os.PathLike) -> list[int]:
    """Image ids from a file: a JSON list, or whitespace/comma-separated integers."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        ids = json.loads(text)
    except json.JSONDecodeError:
        ids = text.replace(",", " ").split()
    ids = ids if isinstance(ids, list) else [ids]
    # Whole numbers only: int() would truncate 1.7 and accept true.
    if not all((isinstance(i, int) and not isinstance(i, bool)) or (isinstance(i, str) and i.lstrip("-").isdigit())
               for i in ids):
        raise ValueError(f"{path}: expected a list of integer image ids")
    return [int(i) for i in ids]
