"""pipeline: adaptive, cascade and oracle policies and the AdaptivePipeline API, each checked against calling the
stages directly (scale predictor, sr.resize, the detector, pycocotools per-image AP)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sr
from ardet.flops import count_flops
from ardet.images import LoadedImage
from detector import Detections, load_detector
from pipeline import (AdaptivePipeline, CascadePolicy, FixedPolicy, OraclePolicy, build_policies,
                      PolicyContext, uncertainty)
from scale_predictor import create_predictor, save_predictor
from scale_predictor.oracle import image_quality

ROOT = Path(__file__).parents[1]
TINY_DETR = str(ROOT / "configs" / "eval" / "detr-tiny.yaml")
CATEGORIES = [{"id": i, "name": f"c{i}"} for i in range(1, 91)]


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return load_detector(TINY_DETR, categories=CATEGORIES, top_k=20)


@pytest.fixture(scope="module")
def predictor_path(tmp_path_factory):
    torch.manual_seed(0)
    model = create_predictor("mobilenetv3-small-050", thumb=64, range=(32.0, 96.0), multiple=8, max_long=160)
    with torch.no_grad():  # a predictor that does not sit at the range's middle for every image
        model.head[-1].bias.fill_(0.7)
    return save_predictor(model, tmp_path_factory.mktemp("pred") / "predictor.safetensors")


def image(h, w, seed=0, image_id=7):
    return LoadedImage(id=image_id, pixels=torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)))


def test_adaptive_policy_is_predictor_then_resize_then_detector(detector, predictor_path):
    assert PolicyContext(detector, "auto").predictor(str(predictor_path)).mean.device.type == "cpu"  # "auto" resolved
    ctx = PolicyContext(detector)
    [policy] = build_policies([{"kind": "adaptive", "predictor": str(predictor_path), "resampler": "bilinear"}], ctx)
    img = image(40, 60)
    result = policy(img)
    decision = ctx.predictor(str(predictor_path)).predict([img.pixels], [img.size])[0]
    assert result.size == decision.size and result.factor == decision.factor
    assert min(result.size) % 8 == 0 and 32 <= min(result.size) <= 96
    resized = sr.resize(img.pixels[None], result.size, "bilinear")
    expected = detector.detect([resized[0]], [img.size])[0]
    assert torch.equal(result.detections.boxes, expected.boxes)
    predictor = ctx.predictor(str(predictor_path))
    assert result.flops["predictor"] == count_flops(predictor.predict, [img.pixels], [img.size])[1].flops > 0
    assert result.flops["detector"] == count_flops(detector.detect, [resized[0]], [img.size])[1].flops


def _dets(scores, boxes=None):
    scores = torch.tensor(scores, dtype=torch.float32)
    boxes = torch.tensor(boxes, dtype=torch.float32) if boxes is not None else torch.tensor([[0, 0, 50, 50.0]] * len(scores))
    return Detections(boxes.reshape(-1, 4), scores, torch.ones(len(scores), dtype=torch.int64))


def test_uncertainty_scores_by_hand():
    d = _dets([0.9, 0.5, 0.3, 0.1], [[0, 0, 10, 40], [0, 0, 40, 40], [0, 0, 8, 8], [0, 0, 2, 2]])
    assert uncertainty(d, (100, 100), (100, 100), "low_confidence", top_k=2) == pytest.approx(1 - 0.7)
    assert uncertainty(_dets([]), (100, 100), (100, 100), "low_confidence") == 1.0
    assert uncertainty(d, (100, 100), (100, 100), "ambiguous", band=(0.2, 0.6)) == 2.0
    # confident boxes (>= 0.3): shorter sides 10, 40, 8 at the input scale 0.5 -> 5, 20, 4; below 16 px: 2 of 3
    assert uncertainty(d, (50, 50), (100, 100), "tiny", confident=0.3, tiny_side=16) == pytest.approx(2 / 3)
    # per axis: a 100x15 box (w x h) of a 480x640 image seen at 512x682 is 15 * 512/480 = 16.0 px tall, not tiny
    assert uncertainty(_dets([0.9], [[0, 0, 100, 15]]), (512, 682), (480, 640), "tiny", tiny_side=16) == 0.0
    with pytest.raises(ValueError, match="score must be one of"):
        uncertainty(d, (1, 1), (1, 1), "entropy")


@pytest.mark.parametrize("threshold, rerun", [(0.0, True), (1.01, False)])
def test_cascade_counts_both_passes_only_when_it_reruns(detector, threshold, rerun):
    img = image(48, 64)
    cascade = CascadePolicy(detector, low=32, high=96, max_size=200, threshold=threshold)
    result = cascade(img)
    low = FixedPolicy(detector, 32, 200)(img)
    high = FixedPolicy(detector, 96, 200)(img)
    assert result.extra["rerun"] is rerun and result.extra["low_size"] == list(low.size)
    final = high if rerun else low
    assert result.size == final.size and torch.equal(result.detections.scores, final.detections.scores)
    expected = low.flops["detector"] + (high.flops["detector"] if rerun else 0)
    assert result.flops["detector"] == expected
    # Memory and FLOP sources cover the stages of both passes.
    for key in ("peak_memory_bytes", "flops_source"):
        assert set(getattr(result, key)) == {*getattr(low, key), *(getattr(high, key) if rerun else {})}
    with pytest.raises(ValueError, match="knob steers the predictor"):  # a fixed second pass would ignore it
        CascadePolicy(detector, low=32, high=96, knob=0.5)
    with pytest.raises(ValueError, match="must be larger than the first"):
        CascadePolicy(detector, low=96, high=32)
    for bad in ({"top_k": 0}, {"band": (0.6, 0.2)}, {"tiny_side": -1}, {"tiny_side": "16"}, {"band": ["a", "b"]},
                {"confident": True}):  # each would fail or mislead on the first image
        with pytest.raises(ValueError, match="score_args"):
            CascadePolicy(detector, low=32, high=96, score_args=bad)


@pytest.mark.parametrize("top_k", [5, 2])
def test_cascade_reruns_exactly_when_the_low_pass_uncertainty_reaches_the_threshold(detector, top_k):
    """The decision is the score of the first pass's own detections: 1 - mean of their top-k scores, by hand."""
    img = image(48, 64, seed=3)
    low = FixedPolicy(detector, 32, 200)(img)
    u = 1.0 - float(low.detections.scores.sort(descending=True).values[:top_k].mean())
    assert 0 < u < 1
    for threshold, rerun in ((u - 1e-6, True), (u + 1e-6, False)):
        result = CascadePolicy(detector, low=32, high=96, max_size=200, threshold=threshold,
                               score_args={"top_k": top_k})(img)
        assert result.extra["uncertainty"] == pytest.approx(u, abs=1e-12) and result.extra["rerun"] is rerun


def test_adaptive_cascade_skips_a_second_pass_no_larger_than_the_first(detector, predictor_path):
    predictor = PolicyContext(detector).predictor(str(predictor_path))  # sizes in [32, 96] for small images
    img = image(48, 64)
    decided = predictor.predict([img.pixels], [img.size])[0].size
    cascade = CascadePolicy(detector, low=max(decided), max_size=200, threshold=0.0, predictor=predictor)
    result = cascade(img)
    first = FixedPolicy(detector, max(decided), 200)(img)
    assert result.extra["rerun"] is False and result.extra["high_size"] == list(decided)
    assert result.size == first.size and torch.equal(result.detections.scores, first.detections.scores)
    assert result.flops["detector"] == first.flops["detector"] and result.flops["predictor"] > 0  # the decision
    assert result.flops["resample"] == first.flops["resample"]  # no render at the size it did not use


def test_oracle_keeps_the_candidate_with_the_best_per_image_ap(detector, tmp_path):
    from eval import CocoDataset

    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(1, 4):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "height": 48, "width": 64})
        annotations.append({"id": i, "image_id": i, "category_id": 1 + i, "bbox": [4.0, 6.0, 30.0, 20.0],
                            "area": 600.0, "iscrowd": 0})
    (tmp_path / "gt.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                  "categories": CATEGORIES}))
    data = CocoDataset(tmp_path / "gt.json", tmp_path)
    sides = [32, 64, 96]
    oracle = OraclePolicy(detector, data, sides, max_size=200)
    for image_id in data.image_ids:
        img = data.load(image_id)
        result = oracle(img)
        quality = []
        for s in sides:
            r = FixedPolicy(detector, s, 200)(img)
            quality.append(image_quality(r.detections.to_coco(image_id), [annotations[image_id - 1]],
                                         images[image_id - 1], CATEGORIES))
        best = int(np.argmax(quality))  # argmax takes the first (smallest size) on ties, as the oracle does
        assert result.extra["candidate_quality"] == quality
        assert result.size == FixedPolicy(detector, sides[best], 200).decide(img)[0]


def test_pipeline_api_on_paths_pil_and_tensors_and_preprocess(tmp_path, predictor_path):
    arr = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    torch.manual_seed(0)
    pipe = AdaptivePipeline.from_config({
        "detector": {"spec": TINY_DETR, "top_k": 10},
        "policy": {"kind": "adaptive", "predictor": str(predictor_path), "resampler": "bicubic"}})
    from_path, from_pil, from_tensor = pipe([str(tmp_path / "a.png"), Image.fromarray(arr),
                                             torch.from_numpy(arr).permute(2, 0, 1)])
    assert torch.equal(from_path.detections.boxes, from_pil.detections.boxes)
    assert torch.equal(from_path.detections.boxes, from_tensor.detections.boxes)
    assert from_path.image_id == "a" and len(from_path.to_coco()) == len(from_path.detections) <= 10
    boxes = from_path.detections.boxes
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 70 + 1e-4).all()

    prep = pipe.preprocess(str(tmp_path / "a.png"))
    assert prep.size == from_path.size and prep.original_size == (50, 70)
    expected = sr.resize(torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255, prep.size, "bicubic")[0]
    assert torch.allclose(prep.pixels, expected, atol=1e-6) and prep.flops["predictor"] > 0
    H, W = prep.size
    corner = prep.to_original(torch.tensor([[0.0, 0.0, W, H]]))
    assert torch.allclose(corner, torch.tensor([[0.0, 0.0, 70.0, 50.0]]))
    assert torch.equal(prep.to_original(torch.tensor([[0, 0, W, H]])), corner)  # integer boxes: not truncated scales

    # Images given as pixels are told apart by their place in a list; a digit file name is a COCO-style integer id.
    Image.fromarray(arr).save(tmp_path / "000012.png")
    ids = [r.image_id for r in pipe([Image.fromarray(arr), torch.rand(3, 30, 30), str(tmp_path / "000012.png")])]
    assert ids == [0, 1, 12]
    Image.fromarray(arr).save(tmp_path / "000001.png")  # the same id as the pixels at index 1: COCO results would mix
    with pytest.raises(ValueError, match=r"share an image id \(1\).*pipe.load"):
        pipe([Image.fromarray(arr), torch.rand(3, 30, 30), str(tmp_path / "000001.png")])

    # boxes from a detector of one's own may be arrays or lists (ONNX Runtime returns numpy)
    assert torch.equal(prep.to_original(np.array([[0, 0, W, H]])), corner)
    assert torch.equal(prep.to_original([0.0, 0.0, W, H]), corner[0])
    assert prep.to_original([]).shape == (0, 4)  # a detector of one's own that found nothing
    with pytest.raises(ValueError, match=r"shaped \[\.\.\., 4\], got \(1, 5\)"):
        prep.to_original(torch.tensor([[0.0, 0.0, W, H, 0.9]]))  # with a score column


def test_pipeline_leaves_the_process_peak_memory_alone_and_can_skip_flops(detector, vm_hwm):
    policy = FixedPolicy(detector, 48, 96)
    torch.ones(100 * 2 ** 20).sum()  # raise the process's peak by 400 MiB, then free it
    before = vm_hwm()
    result = AdaptivePipeline(policy, detector)(image(30, 40))
    assert vm_hwm() >= before and result.peak_memory_bytes == {}  # a host's own peak readings are not reset
    assert result.flops["detector"] == count_flops(detector.detect, [torch.rand(3, 48, 64)], [(30, 40)])[1].flops
    assert AdaptivePipeline(policy, detector, count_flops=False)(image(31, 40)).flops == {}
    assert AdaptivePipeline(policy, detector, measure_memory=True)(image(30, 40)).peak_memory_bytes["detector"] > 0


def test_a_failed_call_leaves_no_costs_and_preprocess_never_returns_the_input(detector, predictor_path):
    pipe = AdaptivePipeline(build_policies(
        [{"kind": "adaptive", "predictor": str(predictor_path), "resampler": "bilinear"}], PolicyContext(detector))[0],
        detector)
    img = image(40, 60)
    first = pipe(img)
    real_detect = detector.detect
    try:
        detector.detect = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory"))
        with pytest.raises(RuntimeError, match="out of memory"):
            pipe(image(50, 70, seed=1))
    finally:
        detector.detect = real_detect
    assert pipe(img).flops == first.flops  # the failed call's predictor and resample costs are not billed here

    same_size = AdaptivePipeline(FixedPolicy(detector, 40, 200), detector)
    pixels = torch.rand(3, 40, 60)
    prep = same_size.preprocess(pixels)
    assert prep.resampler == "none" and torch.equal(prep.pixels, pixels)
    prep.pixels.sub_(0.5)  # the caller normalises in place
    assert pixels.min() >= 0


def test_stages_refuse_uint8_pixels_and_wrong_layouts(detector, predictor_path):
    from scale_predictor import load_predictor

    uint8 = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    model = sr.load_model("liif-nano")
    with pytest.raises(TypeError, match="float pixels"):
        detector.detect([uint8], [(20, 30)])
    with pytest.raises(TypeError, match="float pixels"):
        model.upscale(uint8[None], (40, 60))
    with pytest.raises(TypeError, match="float pixels"):
        load_predictor(str(predictor_path)).predict([uint8])
    with pytest.raises(ValueError, match=r"expected a \[B, 3, H, W\] tensor"):
        model.upscale(uint8.float(), (40, 60))
    batch = torch.rand(2, 3, 20, 30)  # a [B, 3, H, W] batch is a sequence of images
    assert [len(d) for d in detector.detect(batch, [(20, 30)] * 2)] == [len(d) for d in detector.detect(list(batch),
                                                                                                      [(20, 30)] * 2)]
    with pytest.raises(TypeError, match="float32 reference.*use upscale"):
        sr.load_model("liif-nano", dtype=torch.bfloat16).upscale_plain(batch, (30, 45))

    # float pixels in 0-255 (a missing / 255), NaN, and meta tensors: refused by every stage, not run
    predictor = load_predictor(str(predictor_path))
    x255 = uint8.float()
    for run in (lambda x: detector.detect([x], [(20, 30)]), lambda x: model.upscale(x[None], (40, 60)),
                lambda x: predictor.predict([x]), lambda x: sr.resize(x[None], (10, 15))):
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*divide 0-255 values by 255"):
            run(x255)
        with pytest.raises(ValueError, match="NaN or infinity"):
            run(torch.full((3, 20, 30), float("nan")))
        with pytest.raises(ValueError, match="meta tensor"):
            run(torch.empty(3, 20, 30, device="meta"))
    with pytest.raises(ValueError, match="wrap it in a list"):
        detector.detect(batch[0], [(20, 30)])
    with pytest.raises(ValueError, match="positive integers per image"):
        detector.detect([batch[0]], [(0, 30)])
    with pytest.raises(ValueError, match="positive integers per image"):
        detector.detect([batch[0]], (20, 30))  # a bare size, not a list of them
    assert predictor.predict([]) == [] and detector.detect([], []) == []
    with pytest.raises(ValueError, match=r"output size must be \(H, W\)"):
        sr.resize(batch, 40)


def test_resize_shrinks_half_precision_like_float32():
    x = torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float16, torch.bfloat16):  # the CPU has no half-precision antialiased kernel
        y = sr.resize(x.to(dtype), (17, 25))
        assert y.dtype == dtype
        assert torch.allclose(y.float(), sr.resize(x, (17, 25)), atol=1e-2)
    double = x.double()  # float64 stays float64 arithmetic
    assert torch.equal(sr.resize(double, (17, 25)), torch.nn.functional.interpolate(double, (17, 25),
                                                                                     mode="bilinear", antialias=True))


def test_fixed_policy_on_an_image_far_longer_than_wide(detector):
    result = FixedPolicy(detector, 64, 96)(image(1, 300))  # DETR's rule gives the short edge 0 here
    assert result.size == (1, 96)


def test_preprocess_refuses_a_cascade():
    pipe = AdaptivePipeline.from_config({"detector": {"spec": TINY_DETR},
                                         "policy": {"kind": "cascade", "low": 32, "high": 64}})
    with pytest.raises(ValueError, match="preprocess works with fixed and adaptive"):
        pipe.preprocess(torch.rand(3, 20, 20))


def test_detect_command_runs_the_chosen_policy(tmp_path, predictor_path):
    from pipeline.cli import main

    arr = np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "5.png")
    entries = {"cascade": {"low": 32, "high": 64, "threshold": 0.0},
               "adaptive": {"predictor": str(predictor_path), "resampler": "bilinear"},
               "fixed": {"short": 64, "resampler": "liif", "sr_model": "liif-nano", "sr_min_factor": 1.5}}
    for policy, extra in (("cascade", ["--low", "32", "--high", "64", "--uncertainty", "0"]),
                          ("adaptive", ["--predictor", str(predictor_path)]),
                          ("fixed", ["--size", "64", "--resampler", "liif", "--sr-model", "liif-nano",
                                     "--sr-min-factor", "1.5"])):
        out = tmp_path / f"{policy}.json"
        torch.manual_seed(0)
        assert main(["detect", str(tmp_path / "5.png"), "--detector", TINY_DETR, "--policy", policy, "--threshold",
                     "0", "--top-k", "5", "--out", str(out), *extra]) == 0
        torch.manual_seed(0)
        entry = {"kind": policy, **entries[policy]}
        pipe = AdaptivePipeline.from_config({"detector": {"spec": TINY_DETR, "threshold": 0.0, "top_k": 5},
                                             "policy": entry})
        expected = pipe(str(tmp_path / "5.png")).detections.to_coco(5)
        assert json.loads(out.read_text()) == expected and expected


def test_every_loader_refuses_weights_with_nan(detector, predictor_path, tmp_path):
    """NaN weights run without error: the detector finds nothing, LIIF renders black, the predictor sits mid-range.
    Each stage's loader refuses them, naming the file."""
    from scale_predictor import load_predictor, save_predictor

    nano = sr.load_model("liif-nano")
    with torch.no_grad():
        next(nano.parameters())[0].fill_(float("nan"))
    sr.save_model(nano, tmp_path / "nan-sr.safetensors")
    predictor = load_predictor(str(predictor_path))
    with torch.no_grad():
        predictor.head[-1].bias.fill_(float("inf"))
    save_predictor(predictor, tmp_path / "nan-predictor.safetensors")
    with torch.no_grad():
        weight = next(detector.model.parameters())
        saved = weight.clone()
        weight[0] = float("nan")
        detector.model.save_pretrained(tmp_path / "nan-detector")
        weight.copy_(saved)
    for load, path in ((sr.load_model, "nan-sr.safetensors"), (load_predictor, "nan-predictor.safetensors"),
                       (load_detector, "nan-detector")):
        with pytest.raises(ValueError, match=f"{path}.*NaN or infinity"):
            load(str(tmp_path / path))
