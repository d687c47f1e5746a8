"""The synthetic dataset: determinism, COCO validity (checked by pycocotools), sizes, kinds, classes, and the property
it exists for - classes differ only in detail that downscaling removes while the object's blob stays visible."""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from ardet.synthetic import (CATEGORIES, KINDS, MARK_INK, MARK_SIGMA2, MAX_OBJECTS, _mark_inside, make_dataset,
                             make_split, render_image, render_object, split_kinds)
from pipeline.cli import main

SPLIT_SIZES = dict(num_train=4, num_val=10, num_test=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return out, make_dataset(out, seed=7, **SPLIT_SIZES)


def _load(path):
    return json.loads(Path(path).read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs_and_splits_are_independent(dataset, tmp_path):
    out, _ = dataset
    make_dataset(tmp_path / "again", seed=7, **SPLIT_SIZES)
    assert _files(out) == _files(tmp_path / "again")

    make_dataset(tmp_path / "other", seed=8, **SPLIT_SIZES)
    for split in ("train", "val", "test"):
        a, b = _files(out / split), _files(tmp_path / "other" / split)
        assert a.keys() == b.keys()
        assert all(a[k] != b[k] for k in a)

    # Also from another process with another hash seed (no set or dict order may reach the pixels or the JSON).
    import os
    import subprocess
    import sys

    for hash_seed in ("1", "2"):
        subprocess.run([sys.executable, "-m", "pipeline.cli", "make-data", "--out", str(tmp_path / f"p{hash_seed}"),
                        "--seed", "7", *(f"--num-{k[4:]}={v}" for k, v in SPLIT_SIZES.items())], check=True,
                       capture_output=True, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert _files(tmp_path / f"p{hash_seed}") == _files(out)

    # Each image depends only on (seed, split, index, kind): more training images leave val and test as they were.
    make_dataset(tmp_path / "more", seed=7, num_train=6, num_val=10, num_test=2)
    assert _files(out / "val") == _files(tmp_path / "more" / "val")
    assert _files(out / "test") == _files(tmp_path / "more" / "test")


def test_zero_count_skips_the_split_and_keeps_one_already_there(tmp_path):
    made = make_dataset(tmp_path, seed=7, num_train=3, num_val=0, num_test=0)
    before = _files(tmp_path / "train")
    assert set(made) == {"train"} and len(before) == 4 and not (tmp_path / "val").exists()
    assert set(make_dataset(tmp_path, seed=7, num_train=0, num_val=0, num_test=2)) == {"test"}
    assert _files(tmp_path / "train") == before  # the demo's test-only call does not empty a training split


def _coco_eval_of_ground_truth(path):
    """pycocotools' COCOeval of the ground truth against itself: AP 1 in each populated area range, -1 in an empty one."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        dets = gt.loadRes([{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                           for a in gt.dataset["annotations"]])
        ev = COCOeval(gt, dets, "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return gt, ev.stats


def test_coco_valid_and_all_three_area_ranges_populated(dataset):
    out, paths = dataset
    gt, stats_ = _coco_eval_of_ground_truth(paths["val"])
    # stats[3:6] = AP small / medium / large: -1 would mean pycocotools found no object in that range.
    assert stats_[0] == pytest.approx(1.0) and all(v == pytest.approx(1.0) for v in stats_[3:6])
    assert [(c["id"], c["name"]) for c in gt.dataset["categories"]] == list(enumerate(CATEGORIES, start=1))
    for split, path in paths.items():
        data = _load(path)
        image_ids = [im["id"] for im in data["images"]]
        ann_ids = [a["id"] for a in data["annotations"]]
        assert len(set(image_ids)) == len(image_ids) and len(set(ann_ids)) == len(ann_ids)
        images = {im["id"]: im for im in data["images"]}
        for im in data["images"]:
            with Image.open(out / split / "images" / im["file_name"]) as pil:
                assert pil.format == "PNG" and pil.mode == "RGB" and pil.size == (im["width"], im["height"])
        for a in data["annotations"]:
            im, (x, y, w, h) = images[a["image_id"]], a["bbox"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= im["width"] and y + h <= im["height"]
            assert a["area"] == w * h and a["iscrowd"] == 0 and 1 <= a["category_id"] <= len(CATEGORIES)
            assert 4 <= min(w, h) and max(w, h) <= 126  # 6 px objects (clipped to 3/4) up to 112 px x aspect


def test_kinds_mix_and_their_sizes(dataset):
    _, paths = dataset
    data = _load(paths["val"])
    kinds = [im["kind"] for im in data["images"]]
    assert {k: kinds.count(k) for k in KINDS} == {"large": 3, "small": 4, "mixed": 3}  # 30/35/35 % of 10, rounded
    assert split_kinds(7, "val", 1000).count("large") == 300
    by_image = {im["id"]: [] for im in data["images"]}
    for a in data["annotations"]:
        by_image[a["image_id"]].append(a["area"])
    for im in data["images"]:
        areas = by_image[im["id"]]
        if im["kind"] == "large":  # one COCO-large object, at most two more
            assert 1 <= len(areas) <= 3 and max(areas) >= 96 ** 2
        elif im["kind"] == "small":  # many objects, all COCO-small (6-20 px)
            assert 8 <= len(areas) <= MAX_OBJECTS and max(areas) < 32 ** 2
        else:
            assert 4 <= len(areas) <= 10


def test_classes_balanced_and_independent_of_colour_and_size():
    objects = [o for i in range(40) for o in render_image(3, "train", i, ("small", "mixed", "large")[i % 3])[1]]
    counts = np.bincount([o.category for o in objects], minlength=len(CATEGORIES))
    assert stats.chisquare(counts).pvalue > 0.05, counts
    by_class = lambda f: [[f(o) for o in objects if o.category == c] for c in range(len(CATEGORIES))]
    for feature in (lambda o: o.body_rgb[0], lambda o: o.body_rgb[1], lambda o: o.body_rgb[2],
                    lambda o: o.box[2] * o.box[3]):
        assert stats.kruskal(*by_class(feature)).pvalue > 0.01


def test_marks_share_ink_and_second_moments():
    """Numerical integration on a fine grid (independent of the closed forms the module uses)."""
    n = 1600
    g = (np.arange(n) + 0.5) / n * 1.2 - 0.6  # the diamond's corners reach 0.513 of the mark side
    u, v = g[None, :], g[:, None]
    cell = (1.2 / n) ** 2
    for c in range(len(CATEGORIES)):
        m = _mark_inside(c, u, v)
        ink = m.sum() * cell
        assert ink == pytest.approx(MARK_INK, rel=5e-3)
        assert (m * u).sum() * cell == pytest.approx(0, abs=1e-6) and (m * v).sum() * cell == pytest.approx(0, abs=1e-6)
        assert (m * u * u).sum() * cell / ink == pytest.approx(MARK_SIGMA2, rel=5e-3)
        assert (m * v * v).sum() * cell / ink == pytest.approx(MARK_SIGMA2, rel=5e-3)
        assert (m * u * v).sum() * cell == pytest.approx(0, abs=1e-6)
    masks = [_mark_inside(c, u, v) for c in range(len(CATEGORIES))]
    # ...yet any two differ on over a fifth of their ink (ring vs square is the closest pair: 26%).
    assert all((masks[a] != masks[b]).sum() * cell > 0.2 * MARK_INK for a in range(5) for b in range(a + 1, 5))


def _reduced(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter downscale by Pillow (an independent resampler)."""
    return np.asarray(Image.fromarray(np.rint(pixels * 255).astype(np.uint8)).reduce(factor), dtype=np.float64) / 255


def _detail_to_blob_ratio(size: int, factor: int, rgb) -> float:
    """Mean RMS difference between two classes' crops over the RMS difference between an object and the empty
    background, both after downscaling by ``factor``: how much of what is visible of an object tells its class."""
    body, mark, bg = rgb
    crops = [render_object(c, size, size, body, mark, bg, margin=4) for c in range(len(CATEGORIES))]
    empty = np.empty_like(crops[0])
    empty[:] = bg
    small = [_reduced(c, factor) for c in crops]
    blob = np.mean([np.sqrt(((s - _reduced(empty, factor)) ** 2).mean()) for s in small])
    detail = np.mean([np.sqrt(((small[a] - small[b]) ** 2).mean()) for a in range(5) for b in range(a + 1, 5)])
    return detail / blob


@pytest.mark.parametrize("rgb", [((0.8, 0.3, 0.2), (0.1, 0.05, 0.05), (0.5, 0.5, 0.5)),
                                 ((0.2, 0.3, 0.6), (0.85, 0.9, 0.95), (0.7, 0.65, 0.4))])
def test_downscaling_erases_class_detail_of_small_objects_not_of_large_ones(rgb):
    # A 16 px object shrunk 4x: its blob stays (the box is still findable) but the classes become near-identical.
    assert _detail_to_blob_ratio(16, 4, rgb) < 0.35 * _detail_to_blob_ratio(16, 1, rgb)
    # A 64 px object at half size keeps almost all of its class detail: a smaller input loses nothing.
    assert _detail_to_blob_ratio(64, 2, rgb) > 0.85 * _detail_to_blob_ratio(64, 1, rgb)


@pytest.mark.parametrize("silhouette", ["ellipse", "roundrect"])
@pytest.mark.parametrize("w,h", [(6.25, 5.5), (13.75, 17.0), (40.5, 33.25)])
def test_box_is_tight_around_the_drawn_pixels(silhouette, w, h):
    crop = render_object(3, w, h, background_rgb=(0.5, 0.5, 0.5), silhouette=silhouette, margin=3)
    ys, xs = np.nonzero(np.abs(crop - 0.5).max(axis=2) > 1e-9)
    # The box is [3, 3 + w] x [3, 3 + h]: inked pixels lie inside it and reach its border pixels on all four sides.
    assert (xs.min(), ys.min()) == (3, 3)
    assert (xs.max(), ys.max()) == (int(np.ceil(3 + w)) - 1, int(np.ceil(3 + h)) - 1)


def test_existing_split_is_kept_replaced_or_refused(tmp_path):
    path = make_split(tmp_path / "val", 1, "val", 3)
    stamp = path.stat().st_mtime_ns
    assert make_split(tmp_path / "val", 1, "val", 3) == path and path.stat().st_mtime_ns == stamp  # same: kept
    make_split(tmp_path / "val", 1, "val", 2)  # different: replaced, stale images removed
    assert sorted(p.name for p in (tmp_path / "val" / "images").iterdir()) == ["000000.png", "000001.png"]
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "annotations.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match="not made by ardet make-data"):
        make_split(tmp_path / "foreign", 1, "val", 2)
    with pytest.raises(ValueError, match="image size"):
        make_split(tmp_path / "x", 1, "val", 2, image_size=(64, 64))


def test_cli_writes_dataset_and_prints_counts(tmp_path, capsys):
    assert main(["make-data", "--out", str(tmp_path), "--seed", "2", "--num-train", "2", "--num-val", "1",
                 "--num-test", "1", "--image-size", "160", "224"]) == 0
    printed = capsys.readouterr().out
    assert "train:" in printed and "ring" in printed
    data = _load(tmp_path / "train" / "annotations.json")
    assert [(im["height"], im["width"]) for im in data["images"]] == [(160, 224)] * 2
    assert main(["make-data", "--out", str(tmp_path), "--image-size", "1", "2", "3"]) == 2
