"""detector/: loading offline, DETR's resize rule, processor-equivalent pre/post-processing, label mapping, FLOPs.

References are independent of our code: transformers' DetrImageProcessor / ConditionalDetrImageProcessor (resize,
normalise, pad, post_process_object_detection), its get_size_with_aspect_ratio, and the published DETR-R50 count.
"""
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision.transforms.v2 import functional as TF

from detector import Detections, Detector, build_model, detr_target_size, load_detector, map_labels, set_trainable
from detector.config import BackboneConfig, ModelConfig

REPO = Path(__file__).resolve().parents[1]
R50 = REPO / "configs" / "detector" / "detr-r50.yaml"


def tiny_config(arch="detr", num_labels=5, **kw) -> ModelConfig:
    backbone = BackboneConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                              layer_type="basic", out_stages=[3])
    return ModelConfig(arch=arch, backbone=backbone, d_model=32, encoder_layers=1, decoder_layers=2, ffn_dim=64,
                       heads=4, queries=12, num_labels=num_labels, **kw)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Nothing here may touch the network: the hub client is switched to offline mode."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def r50_dir(tmp_path_factory):
    """A random-init DETR-R50-shaped model (the config of facebook/detr-resnet-50, native ResNet-50) saved with
    save_pretrained, as a user's local model folder."""
    torch.manual_seed(0)
    from ardet.config import load_config
    from detector.config import DetectorConfig

    model = build_model(load_config(DetectorConfig, R50).model)
    path = tmp_path_factory.mktemp("detr-r50")
    model.save_pretrained(path)
    return path


def random_image(h, w, seed=0) -> np.ndarray:
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


def as_float(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255


def hf_boxes_xywh(result: dict, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """transformers' post-processed xyxy boxes, sorted by score, clipped to the image, as COCO xywh."""
    order = result["scores"].argsort(descending=True, stable=True)
    b = result["boxes"][order].clone()
    b[:, 0::2] = b[:, 0::2].clamp(0, w)
    b[:, 1::2] = b[:, 1::2].clamp(0, h)
    return torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1), result["scores"][order], result["labels"][order]


def test_detr_target_size_matches_transformers_rule():
    from transformers.image_transforms import get_size_with_aspect_ratio

    rng = random.Random(0)
    sizes = [(480, 640), (640, 480), (800, 1333), (427, 640), (1, 5000), (333, 500), (612, 612), (2000, 300)]
    sizes += [(rng.randint(16, 3000), rng.randint(16, 3000)) for _ in range(200)]
    for h, w in sizes:
        for short, long in ((800, 1333), (512, 853), (321, 777)):
            expected = get_size_with_aspect_ratio((h, w), short, long)
            if (h, w) == (1, 5000):  # transformers gives the short edge 0, which no resize can make
                assert expected[0] == 0 and detr_target_size(h, w, short, long) == (1, expected[1])
            else:
                assert detr_target_size(h, w, short, long) == expected, (h, w)
    assert detr_target_size(480, 640) == (800, 1066)  # truncation, as stack-notes measured


def test_fixed_800_pixel_values_match_detr_image_processor():
    from transformers import DetrImageProcessor

    import sr

    det = Detector(build_model(tiny_config()), {i: i for i in range(5)})
    img = random_image(240, 320)
    size = detr_target_size(240, 320)
    ours_values, ours_mask = det.preprocess([sr.resize(as_float(img)[None], size)[0]])
    # The default processor on 8-bit input: it resizes the uint8 image (rounding to 8 bits), so one 8-bit level.
    ref = DetrImageProcessor()(images=Image.fromarray(img), return_tensors="pt")
    assert ours_values.shape == ref["pixel_values"].shape == (1, 3, 800, 1066)
    level = 1 / 255 / min(det.std)
    assert (ours_values - ref["pixel_values"]).abs().max() <= level * 1.01
    assert torch.equal(ours_mask, ref["pixel_mask"])
    # On the same float image the processor's resize + normalise is ours up to float rounding (sr.resize upsamples
    # without antialias, the processor with: for bilinear upsampling the same weights, computed differently).
    ref_float = DetrImageProcessor(do_rescale=False)(images=as_float(img), return_tensors="pt")
    torch.testing.assert_close(ours_values, ref_float["pixel_values"], atol=1e-4, rtol=0)


def test_batch_of_different_sizes_is_padded_like_the_processor():
    from transformers import DetrImageProcessor

    det = Detector(build_model(tiny_config()), {i: i for i in range(5)})
    images = [as_float(random_image(50, 70, 1)), as_float(random_image(64, 40, 2))]
    ours_values, ours_mask = det.preprocess(images)
    ref = DetrImageProcessor(do_resize=False, do_rescale=False)(images=images, return_tensors="pt")
    torch.testing.assert_close(ours_values, ref["pixel_values"], atol=1e-6, rtol=0)
    assert torch.equal(ours_mask, ref["pixel_mask"])
    assert ours_values.shape == (2, 3, 64, 70)


def test_detr_r50_local_folder_offline_boxes_match_post_process(r50_dir):
    from transformers import DetrImageProcessor

    det = load_detector(str(r50_dir))
    assert type(det.model).__name__ == "DetrForObjectDetection"
    h, w = 180, 240
    img = as_float(random_image(h, w, 3))
    resized = TF.resize(img, list(detr_target_size(h, w)), antialias=True)
    [dets] = det.detect([resized], [(h, w)])
    pixel_values, pixel_mask = det.preprocess([resized])
    with torch.no_grad():
        outputs = det.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
    ref = DetrImageProcessor().post_process_object_detection(outputs, threshold=0.0, target_sizes=[(h, w)])[0]
    boxes, scores, labels = hf_boxes_xywh(ref, h, w)
    assert len(dets) == len(scores) == 100
    torch.testing.assert_close(dets.boxes, boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(dets.scores, scores)
    assert torch.equal(dets.category_ids, labels)


def test_conditional_detr_topk_decoding_matches_post_process():
    from transformers import ConditionalDetrImageProcessor

    torch.manual_seed(1)
    det = Detector(build_model(tiny_config("conditional_detr", num_labels=3)), {0: 0, 1: 1, 2: 2}, top_k=20)
    h, w = 70, 90
    img = as_float(random_image(h, w, 4))
    [dets] = det.detect([img], [(h, w)])
    pixel_values, pixel_mask = det.preprocess([img])
    with torch.no_grad():
        outputs = det.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
    ref = ConditionalDetrImageProcessor().post_process_object_detection(outputs, threshold=0.0,
                                                                        target_sizes=[(h, w)], top_k=20)[0]
    boxes, scores, labels = hf_boxes_xywh(ref, h, w)
    assert len(dets) == 20
    torch.testing.assert_close(dets.boxes, boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(dets.scores, scores)
    assert torch.equal(dets.category_ids, labels)


def test_boxes_scale_to_original_size_and_coco_format():
    """A box normalised to the resized image lands at the same place in the original, in [x, y, w, h]."""
    det = Detector(build_model(tiny_config(num_labels=2)), {0: 11, 1: 12}, threshold=0.5)
    logits = torch.tensor([[5.0, -5.0, -5.0], [-5.0, 5.0, -5.0], [-5.0, -5.0, 5.0]])  # DETR: last = no object
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.1, 0.1], [0.5, 0.5, 1.0, 1.0]])
    d = det.decode(logits, boxes, (300, 500))
    torch.testing.assert_close(d.boxes, torch.tensor([[200.0, 90.0, 100.0, 120.0], [100.0, 210.0, 50.0, 30.0]]))
    assert d.category_ids.tolist() == [11, 12]
    coco = d.to_coco(7)
    assert coco[0] == {"image_id": 7, "category_id": 11, "bbox": [200.0, 90.0, 100.0, 120.0],
                       "score": pytest.approx(float(torch.softmax(logits[0], 0)[0]))}
    assert all(type(v) in (int, float) for v in coco[0]["bbox"] + [coco[0]["score"], coco[0]["category_id"]])


def test_no_nan_or_negative_size_box_leaves_the_stage():
    torch.manual_seed(2)
    model = build_model(tiny_config("conditional_detr", num_labels=3))

    def corrupt(module, args, output):  # a head gone wrong: NaN scores and boxes, negative and huge sizes
        output.logits[0, :3] = float("nan")
        output.pred_boxes[0, 3:6] = float("nan")
        output.pred_boxes[0, 6:9] = torch.tensor([0.5, 0.5, -0.3, 0.2])
        output.pred_boxes[0, 9] = torch.tensor([3.0, 3.0, 0.5, 0.5])  # entirely outside the image
        return output  # queries 10 and 11 are left sound

    model.register_forward_hook(corrupt)
    det = Detector(model, {0: 1, 1: 2, 2: 3}, top_k=100)
    [d] = det.detect([torch.rand(3, 64, 64)], [(100, 120)])
    assert 0 < len(d) <= 2 * 3  # only the two sound queries can give boxes
    assert torch.isfinite(d.boxes).all() and torch.isfinite(d.scores).all()
    assert (d.boxes[:, 2:] > 0).all()
    assert (d.boxes[:, 0] >= 0).all() and (d.boxes[:, 0] + d.boxes[:, 2] <= 120 + 1e-4).all()
    assert (d.boxes[:, 1] >= 0).all() and (d.boxes[:, 1] + d.boxes[:, 3] <= 100 + 1e-4).all()


def test_boxes_of_padded_canvas_models_are_renormalised():
    """RT-DETR-style models predict relative to the padded input: a box there maps back to the unpadded image."""
    class Canvas(torch.nn.Module):
        config = type("C", (), {"model_type": "rt_detr", "num_labels": 1})()

        def forward(self, pixel_values, pixel_mask):
            out = type("O", (), {})()
            out.logits = torch.full((pixel_values.shape[0], 1, 1), 5.0)
            out.pred_boxes = torch.tensor([[[0.25, 0.25, 0.5, 0.5]]]).repeat(pixel_values.shape[0], 1, 1)
            return out

    det = Detector(Canvas(), {0: 1})
    small, large = torch.rand(3, 50, 50), torch.rand(3, 100, 100)
    d_small, d_large = det.detect([small, large], [(50, 50), (100, 100)])
    torch.testing.assert_close(d_large.boxes, torch.tensor([[0.0, 0.0, 50.0, 50.0]]))
    # The small image fills a quarter of the 100x100 canvas: the box [0, 50] on the canvas covers it all.
    torch.testing.assert_close(d_small.boxes, torch.tensor([[0.0, 0.0, 50.0, 50.0]]))


def test_label_mapping_by_id_by_name_and_mismatch():
    coco_like = {0: "N/A", 1: "person", 2: "bicycle", 3: "car", 12: "N/A", 13: "stop sign"}
    assert map_labels(coco_like, None) == {1: 1, 2: 2, 3: 3, 13: 13}
    assert map_labels(coco_like, [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]) == {1: 1, 3: 3}
    # Contiguous labels, dataset ids elsewhere: by name (case and separators ignored).
    by_name = map_labels({0: "cat", 1: "dog", 2: "stop_sign"},
                         [{"id": 17, "name": "Dog"}, {"id": 5, "name": "cat"}, {"id": 13, "name": "stop sign"}])
    assert by_name == {1: 17, 0: 5, 2: 13}
    # Unnamed classes (random init) can only match by id.
    assert map_labels({i: f"LABEL_{i}" for i in range(4)}, [{"id": 2, "name": "x"}]) == {2: 2}
    with pytest.raises(ValueError, match="3:zebra"):
        map_labels({0: "cat", 1: "dog"}, [{"id": 1, "name": "dog"}, {"id": 3, "name": "zebra"}])
    with pytest.raises(ValueError, match="several"):
        map_labels({0: "cat", 1: "cat"}, [{"id": 4, "name": "cat"}])
    for repeated, what in (([{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}], "ids: 1"),
                           ([{"id": 1, "name": "cat"}, {"id": 2, "name": "Cat"}], "names: cat")):
        with pytest.raises(ValueError, match=what):  # else one of the two would never be detected
            map_labels({0: "cat", 1: "dog"}, repeated)


def test_category_mismatch_fails_at_load_and_mapping_applies(tmp_path):
    model = build_model(tiny_config(num_labels=2), categories=[{"id": 1, "name": "ring"}, {"id": 2, "name": "disc"}])
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="cannot output"):
        load_detector(str(tmp_path), categories=[{"id": 1, "name": "ring"}, {"id": 2, "name": "person"}])
    det = load_detector(str(tmp_path), categories=[{"id": 40, "name": "disc"}, {"id": 30, "name": "ring"}])
    assert det.label_map == {1: 40, 0: 30} and det.category_ids == [30, 40]
    [d] = det.detect([torch.rand(3, 48, 48)], [(48, 48)])
    assert set(d.category_ids.tolist()) <= {30, 40}


def test_legacy_backbone_kwargs_config_loads_offline(tmp_path):
    """A config.json in the transformers 4.x style (timm backbone named by ``backbone`` + ``backbone_kwargs``) makes
    5.x ask the hub; we load it offline into the same model."""
    from transformers import TimmBackboneConfig

    torch.manual_seed(3)
    cfg = tiny_config()
    cfg.backbone = BackboneConfig(kind="timm", timm_name="resnet18", out_stages=[4])
    model = build_model(cfg).eval()
    assert isinstance(model.config.backbone_config, TimmBackboneConfig)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("backbone_config")
    config.update(backbone="resnet18", use_timm_backbone=True, use_pretrained_backbone=True,
                  backbone_kwargs={"in_chans": 3, "out_indices": [4]})
    (tmp_path / "config.json").write_text(json.dumps(config))

    det = load_detector(str(tmp_path))
    x = torch.rand(1, 3, 64, 64)
    mask = torch.ones(1, 64, 64, dtype=torch.int64)
    with torch.no_grad():
        expected, got = model(pixel_values=x, pixel_mask=mask), det.model(pixel_values=x, pixel_mask=mask)
    torch.testing.assert_close(got.logits, expected.logits)
    torch.testing.assert_close(got.pred_boxes, expected.pred_boxes)


def test_hub_id_loads_from_the_cache_offline(tmp_path, monkeypatch):
    """A hub id resolves through huggingface_hub's cache with the network off, with the repo's normalisation."""
    import huggingface_hub.constants

    repo = tmp_path / "models--someorg--tiny-detr"
    snapshot = repo / "snapshots" / ("a" * 40)
    build_model(tiny_config()).save_pretrained(snapshot)
    (snapshot / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    det = load_detector("someorg/tiny-detr")
    assert type(det.model).__name__ == "DetrForObjectDetection" and det.category_ids == [0, 1, 2, 3, 4]
    assert det.mean == (0.5, 0.5, 0.5) and det.std == (0.25, 0.25, 0.25)


@pytest.mark.parametrize("arch", ["detr", "conditional_detr", "deformable_detr"])
def test_each_family_builds_offline_and_detects_in_original_pixels(arch):
    torch.manual_seed(6)
    cfg = tiny_config(arch, num_labels=3, extra={"num_feature_levels": 1} if arch == "deformable_detr" else {})
    det = Detector(build_model(cfg), {0: 5, 1: 6, 2: 7}, top_k=10)
    dets = det.detect([torch.rand(3, 64, 96), torch.rand(3, 48, 48)], [(128, 192), (30, 30)])
    for d, (h, w) in zip(dets, [(128, 192), (30, 30)]):
        assert 0 < len(d) <= 10 and set(d.category_ids.tolist()) <= {5, 6, 7}
        assert (d.boxes[:, 0] + d.boxes[:, 2] <= w + 1e-3).all() and (d.boxes[:, 1] + d.boxes[:, 3] <= h + 1e-3).all()


def test_missing_model_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_detector(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_detector(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="hub cannot provide it"):
        load_detector("no-such-org/no-such-detector")


def test_freezing_is_explicit():
    model = build_model(tiny_config())
    backbone = sum(p.numel() for n, p in model.named_parameters() if n.startswith("model.backbone."))
    total = sum(p.numel() for p in model.parameters())
    assert backbone > 0
    set_trainable(model, freeze_backbone=False)  # transformers froze the native ResNet entirely
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == total
    set_trainable(model, freeze_backbone=True)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == total - backbone
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("model.backbone."))


def test_detr_r50_flops_at_800x1067(r50_dir):
    """162.3 GFLOPs (FlopCounterMode, 2 per multiply-add, attention included) = 81 GMACs."""
    count = load_detector(str(r50_dir)).count_flops((800, 1067))
    assert count.gflops == pytest.approx(162.3, rel=0.01)
    assert count.by_op["_scaled_dot_product_flash_attention_for_cpu"] > 0  # CPU attention is counted


def test_detections_empty_and_to_coco():
    assert Detections.empty().to_coco(1) == [] and len(Detections.empty()) == 0


def test_detect_cli_writes_coco_results_and_drawing(tmp_path):
    from pipeline.cli import main

    torch.manual_seed(5)
    model = build_model(tiny_config("conditional_detr", num_labels=2),
                        categories=[{"id": 0, "name": "ring"}, {"id": 1, "name": "disc"}])  # label 0 ring, 1 disc
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "gt.json").write_text(json.dumps({"categories": [{"id": 1, "name": "ring"}, {"id": 2, "name": "disc"}]}))
    Image.fromarray(random_image(90, 120, 5)).save(tmp_path / "17.png")
    Image.fromarray(random_image(60, 50, 6)).save(tmp_path / "photo.png")
    out = tmp_path / "dets.json"
    assert main(["detect", str(tmp_path / "17.png"), "--detector", str(tmp_path / "model"), "--size", "64",
                 "--threshold", "0.0", "--top-k", "5", "--out", str(out), "--draw", str(tmp_path / "drawn.png"),
                 "--categories", str(tmp_path / "gt.json")]) == 0
    results = json.loads(out.read_text())
    assert len(results) == 5
    for r in results:
        assert set(r) == {"image_id", "category_id", "bbox", "score"} and r["image_id"] == 17
        x, y, w, h = r["bbox"]
        assert r["category_id"] in (1, 2) and w > 0 and h > 0 and 0 <= x and x + w <= 120 + 1e-3 and y + h <= 90 + 1e-3
    assert Image.open(tmp_path / "drawn.png").size == (120, 90)  # drawn on the original image
    assert main(["detect", str(tmp_path / "17.png"), str(tmp_path / "photo.png"), "--detector",
                 str(tmp_path / "model"), "--scale", "0.5", "--threshold", "0.0", "--out", str(out), "--draw", str(tmp_path / "drawn")]) == 0
    assert {p.name for p in (tmp_path / "drawn").iterdir()} == {"17.png", "photo.png"}
    results = json.loads(out.read_text())
    assert {r["image_id"] for r in results} == {17, "photo"} and {r["category_id"] for r in results} <= {0, 1}
    assert main(["detect", str(tmp_path / "17.png"), "--detector", str(tmp_path / "missing")]) == 2


def test_detect_cli_keeps_the_readable_images_results_and_checks_outputs_first(tmp_path, capsys):
    from pipeline.cli import main

    torch.manual_seed(5)
    build_model(tiny_config("conditional_detr", num_labels=2)).save_pretrained(tmp_path / "model")
    Image.fromarray(random_image(60, 50, 6)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes((tmp_path / "good.png").read_bytes()[:200])
    (tmp_path / "b").mkdir()
    Image.fromarray(random_image(40, 40, 7)).save(tmp_path / "b" / "good.png")
    out, run = tmp_path / "dets.json", ["--detector", str(tmp_path / "model"), "--size", "64", "--threshold", "0"]
    # One truncated file among the inputs: its error is reported, the other image's results are still written.
    assert main(["detect", str(tmp_path / "good.png"), str(tmp_path / "broken.png"), *run, "--out", str(out)]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert {r["image_id"] for r in json.loads(out.read_text())} == {"good"}
    # Two inputs with one image id (results and drawings are named by it), a drawing path that is no image file,
    # an output that is a folder: refused before the model runs, and nothing is written.
    out.unlink()
    for inputs, extra, message in (([tmp_path / "good.png", tmp_path / "b" / "good.png"], [], "share"),
                                   ([tmp_path / "good.png"], ["--draw", str(tmp_path / "drawing")], "--draw"),
                                   ([tmp_path / "good.png"], ["--out", str(tmp_path / "b")], "--out"),
                                   ([tmp_path / "good.png"], ["--out", str(tmp_path / "good.png" / "d.json")], "is a file"),
                                   ([tmp_path / "good.png"], ["--draw", str(tmp_path / "good.png" / "x" / "d.png")],
                                    "is a file"),
                                   # outputs that are inputs: the drawings or the results would replace the photos
                                   ([tmp_path / "good.png", tmp_path / "broken.png"], ["--draw", str(tmp_path)],
                                    "is an input image"),
                                   ([tmp_path / "good.png"], ["--out", str(tmp_path / "good.png")],
                                    "is an input image")):
        assert main(["detect", *map(str, inputs), *run, *(extra or ["--out", str(out)])]) == 2
        assert message in capsys.readouterr().err and not out.exists()
    assert Image.open(tmp_path / "good.png").size == (50, 60)  # still the photo
    # A phone photo stored sideways (EXIF orientation 6): --exif apply detects on, and draws, the upright image.
    photo = Image.fromarray(random_image(40, 60, 8))
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(tmp_path / "phone.jpg", exif=exif)
    for policy, size in (("ignore", (60, 40)), ("apply", (40, 60))):
        assert main(["detect", str(tmp_path / "phone.jpg"), *run, "--exif", policy,
                     "--draw", str(tmp_path / f"{policy}.png")]) == 0
        assert Image.open(tmp_path / f"{policy}.png").size == size


def test_weights_that_do_not_fit_or_do_not_load_are_clear_errors(tmp_path):
    """transformers only warns and initialises missing tensors at random: a detector that detects noise."""
    torch.manual_seed(5)
    build_model(tiny_config("conditional_detr", num_labels=2)).save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    save_file({"unrelated": torch.zeros(2)}, str(weights))
    with pytest.raises(ValueError, match="lack"):
        load_detector(str(tmp_path / "model"))
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_detector(str(tmp_path / "model"))
    weights.unlink()
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_detector(str(tmp_path / "model"))
    # A pytorch_model.bin that is a pickle of something other than tensors: refused, never executed
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    (tmp_path / "model" / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="holds more than tensors"):
        load_detector(str(tmp_path / "model"))
    assert not (tmp_path / "ran").exists()
    (tmp_path / "model" / "pytorch_model.bin").write_bytes(b"PK\x03\x04" + b"\x00" * 40)  # a truncated zip
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_detector(str(tmp_path / "model"))
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    for bad in ({k: v for k, v in config.items() if k != "model_type"}, [1, 2]):
        (tmp_path / "model" / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="must be a JSON object with a model_type"):
            load_detector(str(tmp_path / "model"))
    with pytest.raises(ValueError, match="no CUDA device|cpu, cuda"):
        Detector(build_model(tiny_config("conditional_detr", num_labels=2)), {0: 1}, device="gpu")


def test_flops_cli_detr_r50_at_480x640(tmp_path):
    """stack-notes' independent count: DETR-R50 is 58.1 GFLOPs at 480x640."""
    from pipeline.cli import main

    assert main(["flops", "--detector", str(R50), "--size", "480x640", "--json", str(tmp_path / "f.json")]) == 0
    report = json.loads((tmp_path / "f.json").read_text())
    assert report["flops"] / 1e9 == pytest.approx(58.1, rel=0.01)
    assert report["macs"] == report["flops"] / 2 and sum(report["by_op"].values()) == report["flops"]
