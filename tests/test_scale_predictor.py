"""Scale predictor model and API: output convention, robustness, FLOP budget, self-describing checkpoints."""
import json
import math
import random

import pytest
import torch

from scale_predictor import (ScaleDecision, create_predictor, list_predictors, load_predictor, make_thumbnail,
                             save_predictor, target_size)

TINY = dict(thumb=64)  # keeps the CPU tests fast; the budget test uses the default 224 thumbnail


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_predictor("mobilenetv3-small-050", **TINY).eval()


def test_registry_lists_and_builds_every_name():
    names = list_predictors()
    assert "mobilenetv3-small" in names and len(names) >= 2
    with pytest.raises(ValueError, match="unknown scale predictor"):
        create_predictor("no-such-net")
    m = create_predictor({"name": "mobilenetv3-small-050", "args": {"thumb": 32}}, multiple=16)
    assert (m.thumb, m.multiple) == (32, 16)
    assert m.spec == {"name": "mobilenetv3-small-050",
                      "args": {"backbone": "mobilenetv3_small_050", "thumb": 32, "multiple": 16}}
    with pytest.raises(ValueError, match="range"):
        create_predictor("mobilenetv3-small-050", range=(800, 400))


@pytest.mark.parametrize("native,short,multiple,max_long,expected", [
    ((480, 640), 800, 32, 2048, (800, 1066)),   # DetrImageProcessor truncates 480x640 -> 800x1066
    ((640, 480), 800, 32, 2048, (1066, 800)),   # portrait: the short side is the width
    ((480, 640), 810, 32, 2048, (800, 1066)),   # 810 / 32 = 25.3 -> 25 * 32
    ((480, 640), 820, 32, 2048, (832, 1109)),   # 25.6 -> 26 * 32; int(832 * 4 / 3) = 1109
    ((100, 1000), 512, 32, 2048, (192, 1920)),  # long side 5120 > 2048: largest multiple with long <= 2048 is 192
    ((3, 4000), 512, 32, 2048, (1, 1333)),      # even 32 cannot fit: the largest S >= 1 that does
    ((1, 1), 5, 8, 64, (8, 8)),                 # at least one multiple
    ((2413, 3725), 1400, 32, 1333, (864, 1333)),  # int(864 * 3725 / 2413) = 1333 fits, though 864 > 1333 * short/long
])
def test_target_size_hand_computed(native, short, multiple, max_long, expected):
    assert target_size(native, short, multiple=multiple, max_long=max_long) == expected


def test_capped_target_size_is_the_largest_multiple_that_fits():
    rng = random.Random(0)
    for _ in range(2000):
        h, w, multiple = rng.randint(1, 4000), rng.randint(1, 4000), rng.choice([1, 8, 32])
        max_long = rng.randint(64, 2048)
        short, long = min(h, w), max(h, w)
        fits = [s for s in range(1, max_long + 1) if int(s * long / short) <= max_long]  # brute force
        if not fits:  # too elongated for even 1 px: covered by the hand-computed cases
            continue
        best = max([s for s in fits if s % multiple == 0] or fits)
        requested = max(multiple, multiple * round(4096 / multiple))  # more than can ever fit
        if int(requested * long / short) > max_long:
            assert min(target_size((h, w), 4096, multiple=multiple, max_long=max_long)) == best, (h, w, multiple)


def test_fresh_model_predicts_the_middle_of_the_log_range(model):
    # The head's last layer starts at zero, so u = sigmoid(0) = 1/2: S = exp((log lo + log hi) / 2) = sqrt(lo * hi).
    lo, hi = model.lo, model.hi
    d = model.predict([torch.rand(3, 480, 640)])[0]
    assert d.raw_short_side == pytest.approx(math.sqrt(lo * hi), rel=1e-5)
    assert d.short_side == 32 * round(math.sqrt(lo * hi) / 32) and d.size == (d.short_side, int(d.short_side * 4 / 3))
    assert d.factor == pytest.approx(d.short_side / 480)


def _trained_like(model):
    """Perturb the zero-initialised last layer so predictions differ per image."""
    m = create_predictor(model.spec).eval()
    m.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    torch.nn.init.normal_(m.head[-1].weight, std=2.0)
    return m


def test_degenerate_images_get_valid_sizes(model):
    m = _trained_like(model)
    images = [torch.rand(3, 1, 1), torch.zeros(3, 480, 640), torch.ones(3, 480, 640), torch.rand(3, 7, 3000),
              torch.full((3, 200, 100), 0.5)]
    for d, im in zip(m.predict(images), images):
        h, w = im.shape[-2:]
        assert isinstance(d, ScaleDecision) and d.native_size == (h, w)
        assert all(isinstance(v, int) and 1 <= v <= m.max_long for v in d.size)
        assert d.short_side == min(d.size) and math.isfinite(d.factor) and d.factor > 0
        assert d.factor == pytest.approx(d.short_side / min(h, w))
        if max(h, w) / min(h, w) < m.max_long / m.hi:  # aspect leaves room: the range and the multiple hold
            assert d.short_side % m.multiple == 0 and m.lo - m.multiple < d.short_side < m.hi + m.multiple
            assert (d.size[0] <= d.size[1]) == (h <= w)


def test_non_finite_logits_cannot_give_non_finite_sizes(model):
    m = create_predictor(model.spec).eval()
    m.load_state_dict(model.state_dict())
    for bad in (float("nan"), float("inf"), -float("inf")):
        with torch.no_grad():
            m.head[-1].bias.fill_(bad)
        d = m.predict([torch.rand(3, 64, 64)])[0]
        assert math.isfinite(d.raw_short_side) and m.lo <= d.raw_short_side <= m.hi
    with pytest.raises(ValueError, match="NaN"):
        model.predict(torch.full((1, 3, 64, 64), float("nan")), [(64, 64)])
    with pytest.raises(ValueError, match="native sizes"):
        model.predict(torch.rand(2, 3, 64, 64), [(64, 64)])
    # A batch of full images (not thumbnail-sized) is thumbnailed first, exactly as a list of them.
    m, batch = _trained_like(model), torch.rand(2, 3, 90, 120)
    decisions = m.predict(batch, [(900, 1200)] * 2)
    assert decisions == m.predict(list(batch), [(900, 1200)] * 2) != m.predict(list(batch))
    assert decisions == m.predict(make_thumbnail(batch, m.thumb), [(900, 1200)] * 2)
    assert decisions[0] != decisions[1]


def test_factor_output_and_position_inverse():
    m = create_predictor("mobilenetv3-small-050", thumb=32, output="factor", range=(0.5, 2.0), multiple=8).eval()
    native = torch.tensor([[200.0, 300.0], [1000.0, 800.0]])
    u = torch.tensor([0.0, 1.0])
    s = m.short_side(u, native)
    assert s.tolist() == pytest.approx([0.5 * 200, 2.0 * 800])
    assert m.position(s, native).tolist() == pytest.approx(u.tolist(), abs=1e-6)
    d = m.predict(torch.rand(1, 3, 32, 32), [(200, 300)])[0]  # u = 1/2: factor 1, S = native short side 200
    assert d.raw_short_side == pytest.approx(200.0, rel=1e-5) and d.size == (200, 300) and d.factor == 1.0


def test_knob_conditioning():
    torch.manual_seed(0)  # the random init and images: the same whatever ran before
    m = create_predictor("mobilenetv3-small-050", thumb=32, knob=True, default_knob=0.25).eval()
    assert m.predict([torch.rand(3, 40, 50)])[0].knob == 0.25
    assert m.predict([torch.rand(3, 40, 50)], knob=1.0)[0].knob == 1.0
    with pytest.raises(ValueError, match="knob"):
        m.predict([torch.rand(3, 40, 50)], knob=1.5)
    with pytest.raises(ValueError, match="without a knob"):  # not silently ignored
        create_predictor("mobilenetv3-small-050", thumb=32).predict([torch.rand(3, 40, 50)], knob=0.0)
    torch.nn.init.normal_(m.head[-1].weight)
    thumbs, native = torch.rand(1, 3, 32, 32).expand(2, -1, -1, -1), torch.tensor([[100.0, 100.0]] * 2)
    a, b = (m(thumbs, native, torch.tensor(k)) for k in ([0.0, 1.0], [1.0, 0.0]))
    assert a[0] != a[1] and a.flip(0).tolist() == pytest.approx(b.tolist())  # the knob reaches the output


def test_make_thumbnail_antialiased_square():
    torch.manual_seed(0)
    x = torch.rand(3, 480, 640)
    t = make_thumbnail(x, 48)
    assert t.shape == (3, 48, 48) and 0 <= t.min() and t.max() <= 1
    # Antialiased shrinking averages: a 10x/13x reduction of uniform noise has a std far below the input's ~0.29.
    assert t.mean().item() == pytest.approx(x.mean().item(), abs=0.01) and t.std() < 0.05
    assert torch.equal(make_thumbnail(torch.full((3, 1, 1), 0.25), 16), torch.full((3, 16, 16), 0.25))
    assert make_thumbnail(torch.rand(2, 3, 30, 20), 16).shape == (2, 3, 16, 16)


def test_flop_budget_at_default_thumbnail():
    m = create_predictor()  # the default predictor at the default 224 thumbnail
    assert m.thumb == 224
    count = m.flops()
    assert 0.01e9 < count.flops < 0.5e9, count.gflops
    # Independent check of the counter on the first layer: conv 3->16, 3x3, stride 2, 224 -> 112:
    # 112 * 112 outputs * 16 channels * (3 * 3 * 3) multiply-adds, 2 FLOPs each.
    from ardet.flops import count_flops

    stem = m.backbone.conv_stem
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride) == (3, 16, (3, 3), (2, 2))
    _, stem_count = count_flops(stem, torch.rand(1, 3, 224, 224))
    assert stem_count.flops == 2 * 112 * 112 * 16 * 3 * 3 * 3
    # ... and on the head's image projection: Linear(1024 -> 128) on one pooled vector.
    proj = m.image_proj[1]
    _, proj_count = count_flops(proj, torch.rand(1, proj.in_features))
    assert proj_count.flops == 2 * 1024 * 128 == 2 * proj.in_features * proj.out_features


def test_save_load_roundtrip(tmp_path, model):
    m = _trained_like(model)
    path = save_predictor(m, tmp_path / "sp" / "predictor.safetensors")
    spec = json.loads((tmp_path / "sp" / "predictor.json").read_text())
    assert spec == {"name": "mobilenetv3-small-050", "args": {"backbone": "mobilenetv3_small_050", "thumb": 64}}
    images = [torch.rand(3, 120, 90), torch.rand(3, 300, 400)]
    expected = m.predict(images)
    assert load_predictor(path).predict(images) == expected
    (tmp_path / "sp" / "predictor.json").unlink()  # the spec also lives in the file's own metadata
    assert load_predictor(tmp_path / "sp").predict(images) == expected
    with pytest.raises(FileNotFoundError):
        load_predictor(tmp_path / "missing.safetensors")
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    for spec, message in (("{not json", "not valid JSON"), ("[1, 2]", "expected a predictor spec"),
                          ('{"name": "nope"}', "unknown scale predictor")):  # each naming the file and the key
        save_file(state, str(tmp_path / "bad.safetensors"), metadata={"ardet_scale_predictor": spec})
        with pytest.raises(ValueError, match=f"bad.safetensors metadata ardet_scale_predictor: {message}"):
            load_predictor(tmp_path / "bad.safetensors")
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_predictor(path)


def test_backbone_weights_from_a_local_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = timm.create_model("mobilenetv3_small_050", pretrained=False)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "backbone.safetensors")
    for stage in (None, 2):  # whole network, and cut at a stage (features_only)
        m = create_predictor("mobilenetv3-small-050", stage=stage, backbone_weights=str(tmp_path / "backbone.safetensors"))
        assert torch.equal(m.backbone.conv_stem.weight, source.conv_stem.weight)
        assert "backbone_weights" not in m.spec["args"]  # the checkpoint carries the weights, not the path
