"""pipeline.policies: the fixed family and the policy registry, checked against transformers' own DETR resize rule
and against calling the stages directly."""
from pathlib import Path

import pytest
import torch
from transformers import DetrImageProcessor

import sr
from ardet.flops import count_flops
from ardet.images import LoadedImage
from detector import load_detector
from pipeline.policies import CascadePolicy, FixedPolicy, PolicyContext, build_policies, build_policy, list_policies

TINY_DETR = str(Path(__file__).parents[1] / "configs" / "eval" / "detr-tiny.yaml")
CATEGORIES = [{"id": i, "name": f"c{i}"} for i in range(1, 91)]  # every class of the tiny DETR mapped


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return load_detector(TINY_DETR, categories=CATEGORIES)


def image(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LoadedImage(id=7, pixels=torch.rand(3, h, w, generator=g))


@pytest.mark.parametrize("h, w, short, max_size", [(40, 90, 64, 100), (60, 45, 64, 1333), (50, 70, 48, 80),
                                                   (64, 96, 64, 200)])
def test_fixed_size_follows_transformers_detr_resize(detector, h, w, short, max_size):
    processor = DetrImageProcessor(size={"shortest_edge": short, "longest_edge": max_size}, do_rescale=False,
                                   do_normalize=False, do_pad=False)
    expected = tuple(processor(images=torch.rand(3, h, w), return_tensors="pt")["pixel_values"].shape[-2:])
    result = FixedPolicy(detector, short, max_size)(image(h, w))
    assert result.size == expected
    # the factor is the scale DETR's rule applies before truncating to whole pixels (the README's definition)
    assert result.factor == pytest.approx(min(short / min(h, w), max_size / max(h, w)), rel=1e-12)
    assert result.factor == pytest.approx(expected[0] / h, rel=0.05)  # and close to the size's own ratio


def test_fixed_policy_equals_calling_the_stages_directly(detector):
    img = image(40, 56)
    policy = FixedPolicy(detector, short=64, max_size=120, resampler="bicubic")
    result = policy(img)
    resized = sr.resize(img.pixels[None], result.size, "bicubic")
    expected = detector.detect([resized[0]], [img.size])[0]
    assert torch.equal(result.detections.boxes, expected.boxes) and torch.equal(result.detections.scores,
                                                                                 expected.scores)
    assert result.resampler == "bicubic" and result.size == (64, 89)
    assert result.flops["resample"] == count_flops(sr.resize, img.pixels[None], result.size, "bicubic")[1].flops
    assert result.flops["detector"] == count_flops(detector.detect, [resized[0]], [img.size])[1].flops > 0
    assert result.flops["predictor"] == 0 and result.flops_source["detector"] == "counted"
    again = policy(image(40, 56, seed=1))  # same shapes: FLOPs reused, detections differ
    assert again.flops == result.flops and again.flops_source["detector"] == "shape-cache"
    assert len(result.detections) > 0 and not torch.equal(again.detections.scores, result.detections.scores)


def test_fixed_policy_at_native_size_skips_resampling(detector):
    result = FixedPolicy(detector, short=48, max_size=200)(image(48, 64))
    assert result.size == (48, 64) and result.resampler == "none" and result.factor == 1.0
    assert result.flops["resample"] == 0 and "resample" not in result.flops_source


def test_liif_resampler_uses_the_model_only_where_the_image_grows(detector):
    torch.manual_seed(0)
    model = sr.create_model("liif-small").eval()
    policy = FixedPolicy(detector, short=40, max_size=100, resampler=sr.Resampler("liif", model))
    grown = policy(image(24, 32))
    assert grown.resampler == "liif" and grown.size == (40, 53)
    with torch.inference_mode():
        assert grown.flops["resample"] == count_flops(model.upscale, image(24, 32).pixels[None], (40, 53))[1].flops
    shrunk = policy(image(60, 80))
    assert shrunk.resampler == "bilinear" and shrunk.size == (40, 53)


def test_registry_builds_and_rejects(detector):
    ctx = PolicyContext(detector)
    assert "fixed" in list_policies()
    p = build_policy({"kind": "fixed", "short": 64, "resampler": "bicubic"}, ctx)
    assert isinstance(p, FixedPolicy) and p.name == "fixed-64-bicubic" and p.short == 64
    assert build_policy({"kind": "fixed", "name": "mine"}, ctx).name == "mine"
    with pytest.raises(ValueError, match="unknown or missing kind"):
        build_policy({"kind": "magic"}, ctx)
    with pytest.raises(ValueError, match="unknown config key"):
        build_policy({"kind": "fixed", "shrot": 64}, ctx)
    with pytest.raises(ValueError, match="resampler"):
        build_policy({"kind": "fixed", "resampler": "lanczos"}, ctx)
    with pytest.raises(ValueError, match="needs sr_model"):
        build_policy({"kind": "fixed", "resampler": "liif"}, ctx)
    with pytest.raises(ValueError, match="only used with resampler liif"):
        build_policy({"kind": "fixed", "sr_model": "liif-small"}, ctx)
    with pytest.raises(ValueError, match="share a name"):
        build_policies([{"kind": "fixed"}, {"kind": "fixed", "short": 800}], ctx)
    cascade = {"kind": "cascade", "low": 64, "high": 128, "score": "tiny"}
    assert build_policy({**cascade, "score_args": {"tiny_side": 8, "band": [0.1, 0.5]}}, ctx).score_args == {
        "tiny_side": 8, "band": [0.1, 0.5]}
    for wrong in ({"tiny_sides": 8}, {"detections": []}):  # at build time, before any image; only the score's options
        with pytest.raises(ValueError, match="unknown score_args"):
            build_policy({**cascade, "score_args": wrong}, ctx)
    predictor = str(Path(__file__).resolve().parents[1] / "models" / "scale-predictor-demo" / "predictor.safetensors")
    with pytest.raises(ValueError, match="knob must be in"):
        build_policy({"kind": "adaptive", "predictor": predictor, "knob": 5}, ctx)


def test_sr_min_factor_keeps_the_model_for_large_enlargements_only(detector):
    torch.manual_seed(0)
    model = sr.create_model("liif-nano").eval()
    policy = FixedPolicy(detector, short=40, max_size=100, resampler=sr.Resampler("liif", model, 1.5))
    assert policy.name == "fixed-40-liif-max100-above1.5"
    cascade = CascadePolicy(detector, 32, 48, 100, resampler=sr.Resampler("liif", model, 1.5))
    assert cascade.name == "cascade-32-48-low_confidence0.5-liif-above1.5"  # told apart from bilinear ones
    small_step = policy(image(30, 40))  # x1.33: interpolated, exactly as sr.resize
    assert small_step.resampler == "bilinear" and small_step.size == (40, 53)
    assert small_step.flops["resample"] == count_flops(sr.resize, image(30, 40).pixels[None], (40, 53))[1].flops
    big_step = policy(image(20, 26))  # x2: the model
    assert big_step.resampler == "liif"
    with torch.inference_mode():
        assert big_step.flops["resample"] == count_flops(model.upscale, image(20, 26).pixels[None],
                                                         big_step.size)[1].flops
    ctx = PolicyContext(detector)
    with pytest.raises(ValueError, match="sr_min_factor must be a number >= 1"):
        build_policy({"kind": "fixed", "resampler": "liif", "sr_model": "liif-small", "sr_min_factor": 0.5}, ctx)
    with pytest.raises(ValueError, match="only applies to resampler 'liif'"):
        build_policy({"kind": "fixed", "sr_min_factor": 2}, ctx)
