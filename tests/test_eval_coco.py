"""COCO dataset loading and validation: clear errors for what pycocotools would crash on or silently accept."""
import json

import numpy as np
import pytest
from PIL import Image

from ardet.images import load_image
from eval import CocoDataset, load_coco_json, read_image_ids, validate_coco


def write_dataset(tmp_path, n=3):
    (tmp_path / "img").mkdir()
    images = []
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = 40 + 4 * i, 60
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        images.append({"id": 10 + i, "file_name": f"{i}.png", "height": h, "width": w})
    data = {"images": images, "categories": [{"id": 5, "name": "thing"}],
            "annotations": [{"id": 1, "image_id": 10, "category_id": 5, "bbox": [1, 2, 10, 12], "area": 120,
                             "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(data))
    return tmp_path / "gt.json", tmp_path / "img", data


def test_dataset_selects_loads_and_keeps_order(tmp_path):
    gt_path, img_dir, _ = write_dataset(tmp_path)
    ds = CocoDataset(gt_path, img_dir)
    assert ds.image_ids == (10, 11, 12) and len(ds) == 3
    image = ds.load(11)
    assert image.id == 11 and image.size == (44, 60)
    assert np.array_equal(image.pixels.numpy(), load_image(img_dir / "1.png").pixels.numpy())
    assert CocoDataset(gt_path, img_dir, limit=2).image_ids == (10, 11)
    assert CocoDataset(gt_path, img_dir, image_ids=[12, 10], limit=1).image_ids == (12,)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"image_ids": [99]}, ValueError, "not in"),
    ({"image_ids": [10, 10]}, ValueError, "duplicates"),
    ({"limit": 0}, ValueError, "limit"),
])
def test_dataset_selection_errors(tmp_path, kwargs, error, message):
    gt_path, img_dir, _ = write_dataset(tmp_path)
    with pytest.raises(error, match=message):
        CocoDataset(gt_path, img_dir, **kwargs)


def test_missing_files_and_size_mismatch(tmp_path):
    gt_path, img_dir, data = write_dataset(tmp_path)
    (img_dir / "2.png").unlink()
    with pytest.raises(FileNotFoundError, match="2.png"):
        CocoDataset(gt_path, img_dir)
    with pytest.raises(FileNotFoundError, match="image folder"):
        CocoDataset(gt_path, tmp_path / "nope")
    data["images"][0]["height"] = 999
    del data["images"][0]["width"]  # one of the two given is checked too
    gt_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="differs from the annotation file's height 999"):
        CocoDataset(gt_path, img_dir, limit=1)  # from the file header, before any image is evaluated
    # A header claiming a gigantic image is left to the loader's clear error (not Pillow's bomb error at start).
    import struct
    import zlib

    from ardet.images import ImageTooLargeError

    def chunk(kind, payload=b""):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    (img_dir / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND"))
    data["images"][0].update(height=20000, width=20000)
    gt_path.write_text(json.dumps(data))
    with pytest.raises(ImageTooLargeError, match="0.png"):
        CocoDataset(gt_path, img_dir, limit=1).load(10)


def test_malformed_json_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_coco_json(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_coco_json(tmp_path / "absent.json")


GOOD = {"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 5]}]}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("annotations"), "missing list"),
    (lambda d: d["images"].append({"id": 1, "file_name": "b.jpg"}), "duplicate 'images' ids"),
    (lambda d: d["images"].append({"id": "x", "file_name": "b.jpg"}), "must be integers"),
    (lambda d: d["annotations"][0].pop("id"), "lacks id"),
    (lambda d: d["annotations"][0].update(image_id=7), "unknown image_id"),
    (lambda d: d["annotations"][0].update(category_id=7), "unknown category_id"),
    (lambda d: d["annotations"][0].update(bbox=[0, 0, float("inf"), 1]), "bbox"),
    (lambda d: d["annotations"][0].update(area="big"), "area"),  # pycocotools would fail comparing it to a range
    (lambda d: d["annotations"][0].update(area=float("nan")), "area"),  # ... or silently drop the object
    (lambda d: d["annotations"][0].update(iscrowd="no"), "iscrowd"),
    (lambda d: d["categories"][0].update(name=7), "category's name must be a non-empty string"),
    (lambda d: d["images"][0].update(file_name=5), "image's file_name must be a non-empty string"),
    (lambda d: d["images"][0].update(file_name=None), "file_name must be a non-empty string"),
])
def test_validation_errors_name_the_problem(mutate, message):
    data = json.loads(json.dumps(GOOD))
    mutate(data)
    with pytest.raises(ValueError, match=message):
        validate_coco(data)


def test_missing_area_and_iscrowd_are_filled(caplog):
    out = validate_coco(json.loads(json.dumps(GOOD)))
    assert out["annotations"][0]["area"] == 20 and out["annotations"][0]["iscrowd"] == 0
    assert "area" in caplog.text


def test_read_image_ids(tmp_path):
    (tmp_path / "a.json").write_text("[3, 1, 2]")
    (tmp_path / "b.txt").write_text("3\n1, 2\n")
    (tmp_path / "c.txt").write_text("3 x")
    assert read_image_ids(tmp_path / "a.json") == read_image_ids(tmp_path / "b.txt") == [3, 1, 2]
    for bad in ("3 x", "[1.7]", "[true]"):  # int() would truncate 1.7 to 1 and read true as 1
        (tmp_path / "c.txt").write_text(bad)
        with pytest.raises(ValueError, match="integer"):
            read_image_ids(tmp_path / "c.txt")


def test_read_image_ids_takes_a_json_list_or_plain_text(tmp_path):
    from eval import read_image_ids

    (tmp_path / "a.json").write_text("[3, 1, 2]")
    (tmp_path / "b.txt").write_text("3 1,\n2\n")
    assert read_image_ids(tmp_path / "a.json") == read_image_ids(tmp_path / "b.txt") == [3, 1, 2]
