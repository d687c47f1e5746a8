"""Scale-predictor losses and the oracle table, against hand computations and scipy / pycocotools references."""
import json
import math

import numpy as np
import pytest
import scipy.stats
import torch

from scale_predictor.losses import (beta_mean_from_localisation, beta_quantiles, distribution_loss, oracle_loss,
                                    scale_loss, upscale_probability)
from scale_predictor.oracle import OracleTable, build_oracle_table, image_quality


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _bce(u, p):
    return -(p * math.log(u) + (1 - p) * math.log(1 - u))


def test_upscale_probability_hand_values():
    areas = torch.tensor([1024.0, 5120.0, 9216.0, 2 * 1024.0, 0.0])
    got = upscale_probability(areas, lo=1024, hi=9216).tolist()
    # x = -6 + 12 (a - 1024) / 8192; P_up = sigmoid(-x)
    want = [_sigmoid(6), 0.5, _sigmoid(-6), _sigmoid(6 - 12 * 1024 / 8192), _sigmoid(6 + 12 * 1024 / 8192)]
    assert got == pytest.approx(want, rel=1e-6)
    assert upscale_probability(torch.tensor([2048.0]), gain=2.0).item() == pytest.approx(_sigmoid(6), rel=1e-6)


def test_scale_loss_hand_computed():
    # Image 0: factor 2, boxes 10x10 (area 400 at scale 2: bin 0), 20x20 (1600: bin 1), 40x40 (6400: bin 2),
    # 12x12 (576: bin 0). Image 1: no boxes (ignored). Image 2: factor 0.5, one 100x100 box (2500: bin 1).
    u = torch.tensor([0.7, 0.1, 0.3], requires_grad=True)
    factors = torch.tensor([2.0, 1.0, 0.5], requires_grad=True)
    boxes = [torch.tensor([[0, 0, 10, 10], [5, 5, 20, 20], [0, 0, 40, 40], [1, 1, 12, 12]], dtype=torch.float32),
             torch.zeros(0, 4), torch.tensor([[3, 3, 100, 100]], dtype=torch.float32)]
    loss = scale_loss(u, factors, boxes)

    def p(area):
        return _sigmoid(6 - 12 * (area - 1024) / (9216 - 1024))

    image0 = (_bce(0.7, p(400)) + _bce(0.7, p(576))) / 2 + _bce(0.7, p(1600)) + _bce(0.7, p(6400))
    image2 = _bce(0.3, p(2500))
    assert loss.item() == pytest.approx((image0 + image2) / 2, rel=1e-5)
    loss.backward()
    assert factors.grad is None  # the factor is detached: the resize is not differentiable
    assert u.grad[1] == 0 and u.grad[0] != 0
    empty = scale_loss(u, factors, [torch.zeros(0, 4)] * 3)
    assert empty.item() == 0 and empty.requires_grad


def test_beta_quantiles_analytic_and_scipy():
    n = 7
    q = (np.arange(n) + 0.5) / n
    assert beta_quantiles(0.5, 2.0, n).numpy() == pytest.approx(q, abs=1e-6)  # Beta(1, 1) is uniform
    assert beta_quantiles(2 / 3, 3.0, n).numpy() == pytest.approx(np.sqrt(q), abs=1e-6)  # Beta(2, 1): F(x) = x^2
    assert beta_quantiles(0.3, 8.0, n).numpy() == pytest.approx(scipy.stats.beta.ppf(q, 2.4, 5.6), abs=1e-6)
    with pytest.raises(ValueError):
        beta_quantiles(1.0, 8.0, n)


def test_distribution_loss_is_wasserstein_1():
    rng = np.random.default_rng(0)
    u = rng.uniform(0.01, 0.99, 16)
    target = scipy.stats.beta.ppf((np.arange(16) + 0.5) / 16, 0.7 * 5, 0.3 * 5)
    got = distribution_loss(torch.tensor(u, dtype=torch.float32), 0.7, 5.0).item()
    assert got == pytest.approx(scipy.stats.wasserstein_distance(u, target), abs=1e-6)
    perfect = torch.tensor(rng.permutation(target), dtype=torch.float32)  # order does not matter
    assert distribution_loss(perfect, 0.7, 5.0).item() == pytest.approx(0.0, abs=1e-6)
    # The gradient moves every value toward its matched quantile.
    x = torch.tensor([0.9, 0.1], requires_grad=True)
    distribution_loss(x, 0.5, 2.0).backward()  # quantiles 0.25, 0.75: 0.1 -> up, 0.9 -> down
    assert x.grad.tolist() == pytest.approx([0.5, -0.5])


def test_beta_mean_from_localisation():
    assert beta_mean_from_localisation(2.0, 1.0) == pytest.approx(2 / 3)
    assert beta_mean_from_localisation(0.3, 0.3) == 0.5
    with pytest.raises(ValueError):
        beta_mean_from_localisation(0.0, 0.0)


def test_oracle_loss_minimum_at_target():
    u = torch.tensor([0.2, 0.6], requires_grad=True)
    target = torch.tensor([0.2, 0.9])
    loss = oracle_loss(u, target)
    assert loss.item() == pytest.approx((_bce(0.2, 0.2) + _bce(0.6, 0.9)) / 2, rel=1e-6)
    loss.backward()
    assert u.grad[0].item() == pytest.approx(0.0, abs=1e-6) and u.grad[1] < 0


def _table():
    # 2 images x 3 sizes; cost = 1 - quality + lam * gflops
    return OracleTable(image_ids=(10, 11), short_sides=(200, 400, 800),
                       quality=np.array([[0.2, 0.6, 0.7], [0.8, 0.8, 0.8]]),
                       gflops=np.array([[10.0, 40.0, 160.0], [10.0, 40.0, 160.0]]), sizes=np.zeros((2, 3, 2)))


def test_oracle_table_labels_by_hand():
    t = _table()
    assert t.costs(0.0) == pytest.approx(np.array([[0.8, 0.4, 0.3], [0.2, 0.2, 0.2]]))
    assert t.labels(0.0).tolist() == [2, 0]  # ties go to the smaller size
    from scale_predictor.train import OracleSection
    assert OracleSection(short_sides=[288, 96, 160, 96]).short_sides == [96, 160, 288]  # so whatever order is given
    # lam = 0.005: image 0 costs 0.85, 0.6, 1.1 -> 400; image 1: 0.25, 0.4, 1.0 -> 200
    assert t.labels(0.005).tolist() == [1, 0]
    assert t.labels(np.array([0.0, 0.005])).tolist() == [2, 0]  # one lambda per image
    soft = t.soft_targets(0.0, 0.1)
    e = np.exp(-np.array([0.8, 0.4, 0.3]) / 0.1)
    assert soft[0] == pytest.approx(e / e.sum()) and soft[1] == pytest.approx([1 / 3] * 3)
    sub = t.take(np.array([1]))
    assert sub.image_ids == (11,) and sub.labels(0.005).tolist() == [0] and sub.quality.shape == (1, 3)


def test_oracle_cache_resumes_and_refuses_other_detectors(tmp_path):
    cache = tmp_path / "table.jsonl"
    calls = []

    def run(image, size):
        calls.append((image, size))
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed mid-table
        return 0.5, size[0] * size[1] / 1e6

    images = [(i, (100, 150), lambda i=i: f"image-{i}") for i in (1, 2, 3)]
    with pytest.raises(KeyboardInterrupt):
        build_oracle_table(images, [64, 128], run, cache, multiple=32, meta={"detector": "a"}, progress=False)
    assert len(list(open(cache))) == 1 + 3  # meta + the three finished entries
    calls.clear()
    run_ok = lambda image, size: (calls.append((image, size)), (0.5, size[0] * size[1] / 1e6))[1]  # noqa: E731
    table = build_oracle_table(images, [64, 128], run_ok, cache, multiple=32, meta={"detector": "a"}, progress=False)
    assert calls == [("image-2", (128, 192)), ("image-3", (64, 96)), ("image-3", (128, 192))]  # only what was missing
    assert table.image_ids == (1, 2, 3) and table.sizes[0].tolist() == [[64, 96], [128, 192]]
    assert table.gflops[:, 1].tolist() == pytest.approx([128 * 192 / 1e6] * 3)
    # Complete: no detector needed; another detector's cache is never mixed in.
    assert build_oracle_table(images, [64, 128], None, cache, multiple=32, meta={"detector": "a"},
                              progress=False).quality.shape == (3, 2)
    with pytest.raises(ValueError, match="made with"):
        build_oracle_table(images, [64, 128], None, cache, multiple=32, meta={"detector": "b"}, progress=False)
    with pytest.raises(ValueError, match="lack oracle entries"):
        build_oracle_table(images, [64, 128, 256], None, tmp_path / "other.jsonl", progress=False)
    # A torn last line (killed mid-write) is dropped and its entry recomputed.
    with open(cache, "a") as f:
        f.write('{"image_id": 4, "short')
    calls.clear()
    more = images + [(4, (100, 150), lambda: "image-4")]
    build_oracle_table(more, [64, 128], run_ok, cache, multiple=32, meta={"detector": "a"}, progress=False)
    assert len(calls) == 2 and all(json.loads(line) for line in open(cache))


def test_image_quality_is_per_image_coco_ap():
    image = {"id": 7, "width": 200, "height": 200, "file_name": "x.png"}
    cats = [{"id": 1, "name": "a"}]
    gt = [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 10000, "iscrowd": 0}]
    det = {"image_id": 7, "category_id": 1, "score": 0.9}
    assert image_quality([{**det, "bbox": [0, 0, 100, 100]}], gt, image, cats) == pytest.approx(1.0)
    # IoU 0.62 matches at thresholds 0.50, 0.55, 0.60 of the ten: AP = 3 / 10.
    assert image_quality([{**det, "bbox": [0, 0, 100, 62]}], gt, image, cats) == pytest.approx(0.3)
    assert image_quality([], gt, image, cats) == 0.0
    assert image_quality([{**det, "bbox": [0, 0, 10, 10]}], [], image, cats) is None


def test_image_quality_equals_pycocotools_over_every_category():
    """image_quality evaluates only the image's own categories; pycocotools over all of them (with detections of
    categories absent from the image) must give the same AP."""
    import contextlib
    import io
    import random

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = random.Random(0)
    image = {"id": 3, "width": 300, "height": 200, "file_name": "x.png"}
    cats = [{"id": i, "name": f"c{i}"} for i in range(1, 11)]
    gt = [{"id": k + 1, "image_id": 3, "category_id": rng.choice([2, 5]), "iscrowd": 0,
           "bbox": [rng.uniform(0, 200), rng.uniform(0, 120), rng.uniform(5, 90), rng.uniform(5, 70)]} for k in range(8)]
    for a in gt:
        a["area"] = a["bbox"][2] * a["bbox"][3]
    # per object: one detection of its class, two of any class (most of them absent from the image)
    dets = [{"image_id": 3, "category_id": c, "score": rng.random(),
             "bbox": [v + rng.gauss(0, 3) for v in a["bbox"][:2]] + a["bbox"][2:]}
            for a in gt for c in (a["category_id"], rng.randint(1, 10), rng.randint(1, 10))]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [image], "annotations": [dict(a) for a in gt], "categories": cats}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes([dict(d) for d in dets]), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] > 0 and image_quality(dets, gt, image, cats) == pytest.approx(ev.stats[0], abs=1e-12)
