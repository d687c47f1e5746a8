"""ardet.coco.evaluate_bbox against pycocotools itself (and faster-coco-eval), and the pycocotools traps it catches."""
import contextlib
import copy
import io
import math
import random

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from eval import BACKENDS, CocoMetrics, STAT_NAMES, evaluate_bbox, validate_coco

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]


def make_gt(num_images=30, seed=0):
    """GT with small, medium and large boxes in every category, some crowd boxes, non-contiguous ids."""
    rng = random.Random(seed)
    images, anns = [], []
    for i in range(num_images):
        image_id = 1000 + 7 * i
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": 480, "width": 640})
        for _ in range(rng.randint(1, 6)):
            side = rng.choice([rng.uniform(8, 30), rng.uniform(34, 90), rng.uniform(100, 300)])
            w, h = side * rng.uniform(0.7, 1.4), side * rng.uniform(0.7, 1.4)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": rng.choice(CATEGORIES)["id"],
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(rng.random() < 0.05)})
    return validate_coco({"images": images, "annotations": anns, "categories": CATEGORIES})


def make_dets(gt, seed=1):
    """Jittered true positives (some missed, some wrongly labelled) plus random false positives."""
    rng = random.Random(seed)
    dets = []
    for a in gt["annotations"]:
        if rng.random() < 0.2:
            continue
        x, y, w, h = a["bbox"]
        j = lambda v: v * rng.uniform(-0.15, 0.15)  # noqa: E731
        cat = a["category_id"] if rng.random() < 0.85 else rng.choice(CATEGORIES)["id"]
        dets.append({"image_id": a["image_id"], "category_id": cat, "score": rng.random(),
                     "bbox": [x + j(w), y + j(h), w * rng.uniform(0.8, 1.2), h * rng.uniform(0.8, 1.2)]})
    for img in gt["images"]:
        for _ in range(rng.randint(0, 4)):
            dets.append({"image_id": img["id"], "category_id": rng.choice(CATEGORIES)["id"], "score": rng.random(),
                         "bbox": [rng.uniform(0, 500), rng.uniform(0, 350), rng.uniform(5, 140), rng.uniform(5, 130)]})
    return dets


def pycocotools_eval(gt, dets, image_ids=None, cat_ids=None):
    """The reference: pycocotools used the plain documented way."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = image_ids
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats]


def test_stats_equal_pycocotools_exactly():
    gt = make_gt()
    dets = make_dets(gt)
    metrics = evaluate_bbox(gt, dets)
    reference = pycocotools_eval(gt, dets)
    assert list(metrics.stats) == reference
    assert len(metrics.stats) == 12 and metrics["AP_S"] == reference[3]
    assert all(0 < s < 1 for s in reference)  # every size range is exercised, so the comparison means something


def test_per_category_ap_equals_pycocotools_restricted_to_that_category():
    gt = make_gt()
    dets = make_dets(gt)
    metrics = evaluate_bbox(gt, dets)
    for cat in CATEGORIES:
        assert metrics.per_category[cat["id"]] == pytest.approx(pycocotools_eval(gt, dets, cat_ids=[cat["id"]])[0],
                                                                rel=1e-12, abs=0)
    assert math.isclose(sum(metrics.per_category.values()) / len(CATEGORIES), metrics["AP"], rel_tol=1e-12)


def test_restricted_to_evaluated_image_ids():
    gt = make_gt()
    dets = make_dets(gt)
    subset = [img["id"] for img in gt["images"][:10]]
    dets_subset = [d for d in dets if d["image_id"] in subset]
    metrics = evaluate_bbox(gt, dets_subset, subset)
    assert list(metrics.stats) == pycocotools_eval(gt, dets_subset, image_ids=subset)
    assert metrics.num_images == 10
    assert list(metrics.stats) != pycocotools_eval(gt, dets_subset)  # the other images would count as misses


def test_empty_results_are_evaluated_not_crashed():
    gt = make_gt(5)
    with pytest.raises(IndexError):  # the trap being handled
        pycocotools_eval(gt, [])
    metrics = evaluate_bbox(gt, [])
    # Reference: a lone false positive changes nothing when nothing is found: recall and precision are 0.
    far = [{"image_id": gt["images"][0]["id"], "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.01}]
    assert list(metrics.stats) == pycocotools_eval(gt, far)
    assert metrics.num_detections == 0


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d[0].update(bbox=[float("nan"), 0, 10, 10]), "finite"),
    (lambda d: d[0].update(bbox=[0, 0, -5, 10]), "w, h >= 0"),
    (lambda d: d[0].update(bbox=[0, 0, 10]), r"\[x, y, w, h\]"),
    (lambda d: d[0].update(score=float("nan")), "score"),
    (lambda d: d[0].pop("score"), "score"),
    (lambda d: d[0].update(image_id=424242), "not in the ground truth"),
    (lambda d: d[0].update(category_id=99), "category id"),
])
def test_bad_detections_raise_clear_errors(mutate, message):
    gt = make_gt(5)
    dets = make_dets(gt)
    mutate(dets)
    with pytest.raises(ValueError, match=message):
        evaluate_bbox(gt, dets)


def test_zero_based_labels_are_caught_with_a_hint():
    gt = make_gt(10)
    index = {c["id"]: i for i, c in enumerate(CATEGORIES)}  # contiguous 0-based labels, as a model outputs them
    dets = [{**a, "category_id": index[a["category_id"]], "score": 0.9} for a in gt["annotations"]]
    dets = [{k: d[k] for k in ("image_id", "category_id", "bbox", "score")} for d in dets]
    assert pycocotools_eval(gt, dets)[0] < 0.5  # perfect boxes, silently mis-scored
    with pytest.raises(ValueError, match="0-based"):
        evaluate_bbox(gt, dets)


def test_detections_outside_the_evaluated_subset_are_ignored_as_pycocotools_does():
    gt = make_gt(8, seed=5)
    dets = make_dets(gt, seed=6)  # a results file for every image, evaluated on a subset
    subset = [img["id"] for img in gt["images"][::3]]
    assert list(evaluate_bbox(gt, dets, subset).stats) == pycocotools_eval(gt, dets, image_ids=subset)
    with pytest.raises(ValueError, match="no images"):  # pycocotools reports -1 everywhere
        evaluate_bbox(gt, dets, [])
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_bbox(gt, dets, [424242])
    with pytest.raises(ValueError, match="duplicates"):  # pycocotools scores it once: num_images would be wrong
        evaluate_bbox(gt, dets, subset + subset[:1])


def test_coco_eval_warns_when_detections_miss_the_evaluated_images(tmp_path, caplog):
    import json

    from pipeline.cli import main

    gt = make_gt(6, seed=7)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    ids = [img["id"] for img in gt["images"]]
    (tmp_path / "dets.json").write_text(json.dumps([d for d in make_dets(gt) if d["image_id"] in ids[3:]]))
    (tmp_path / "ids.json").write_text(json.dumps(ids[:3]))  # detections exist, but none for these images
    assert main(["coco-eval", "--gt", str(tmp_path / "gt.json"), "--dets", str(tmp_path / "dets.json"),
                 "--image-ids", str(tmp_path / "ids.json")]) == 0
    assert "cover 0 of the 3 evaluated images" in caplog.text


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d[0].update(image_id=[1]), "not an integer"),
    (lambda d: d[0].update(category_id=True), "not an integer"),
    (lambda d: d[0].update(score=True), "score"),
])
def test_detection_ids_and_scores_must_be_numbers(mutate, message):
    gt = make_gt(5)
    dets = make_dets(gt)
    mutate(dets)
    with pytest.raises(ValueError, match=message):
        evaluate_bbox(gt, dets)


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_detections_and_ground_truth_are_not_mutated(backend):
    if backend == "faster-coco-eval":
        pytest.importorskip("faster_coco_eval", reason="faster-coco-eval not installed (pip install 'ardet[fast-eval]')")
    gt = make_gt(5)
    dets = make_dets(gt)
    before, gt_before = copy.deepcopy(dets), copy.deepcopy(gt)
    first = evaluate_bbox(gt, dets, backend=backend)
    assert dets == before  # pycocotools' loadRes adds area/id/segmentation to what it is given
    assert gt == gt_before  # COCOeval adds `ignore` to the GT annotations it is given
    assert evaluate_bbox(gt, dets, backend=backend).stats == first.stats


def test_faster_coco_eval_gives_the_same_stats():
    pytest.importorskip("faster_coco_eval", reason="faster-coco-eval not installed (pip install 'ardet[fast-eval]')")
    gt = make_gt(60, seed=3)
    dets = make_dets(gt, seed=4)
    slow = evaluate_bbox(gt, dets)
    fast = evaluate_bbox(gt, dets, backend="faster-coco-eval")
    assert fast.backend == "faster-coco-eval"
    # Equal to float64 rounding: the two libraries sum precisions in different orders (last-ulp differences).
    assert fast.stats == pytest.approx(slow.stats, rel=1e-12, abs=1e-15)
    for k, v in slow.per_category.items():
        assert fast.per_category[k] == pytest.approx(v, rel=1e-12)
    assert evaluate_bbox(gt, [], backend="faster-coco-eval").stats == evaluate_bbox(gt, []).stats


def test_metrics_to_dict_is_json_ready():
    gt = make_gt(5)
    m = evaluate_bbox(gt, make_dets(gt))
    d = m.to_dict()
    assert d["stats"] == list(m.stats) and d["stat_names"] == list(STAT_NAMES)
    assert {c["id"] for c in d["per_category"]} == {c["id"] for c in CATEGORIES}
    assert isinstance(m, CocoMetrics) and "AP50" in m.format()
