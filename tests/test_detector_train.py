"""train-detector: a tiny Conditional DETR demonstrably learns on a generated COCO set; checkpoints, resume, CLI.

The accuracy reference is pycocotools on the generated ground truth; the floor is one that random-init models of the
same config do not reach (measured in the test itself, not assumed).
"""
import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from ardet.config import ConfigError, load_config
from ardet.files import read_jsonl
from detector import Detector, build_model, load_detector, map_labels
from detector.config import DetectorConfig
from detector.train import evaluate, train_detector

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "detector" / "tiny-conditional-detr.yaml"
CATEGORIES = [{"id": 3, "name": "red box"}, {"id": 8, "name": "blue disc"}]  # ids not 0..K-1 on purpose


def make_shapes(root: Path, count: int, seed: int, size=(64, 80)) -> tuple[str, str]:
    """COCO-format set: one red box or blue disc (30-60% of the short side) per noisy image; exact boxes."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(1, count + 1):
        h, w = size[0] + rng.randint(-8, 8), size[1] + rng.randint(-8, 8)
        image = Image.effect_noise((w, h), 40).convert("RGB")
        bw, bh = (int(min(h, w) * rng.uniform(0.3, 0.6)) for _ in range(2))
        x, y = rng.randint(0, w - bw), rng.randint(0, h - bh)
        category = rng.choice(CATEGORIES)
        shape = ImageDraw.Draw(image).rectangle if category["id"] == 3 else ImageDraw.Draw(image).ellipse
        shape((x, y, x + bw - 1, y + bh - 1), fill=(220, 40, 40) if category["id"] == 3 else (40, 70, 220))
        image.save(root / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "height": h, "width": w})
        annotations.append({"id": i, "image_id": i, "category_id": category["id"], "bbox": [x, y, bw, bh],
                            "area": bw * bh, "iscrowd": 0})
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": CATEGORIES}))
    return str(root / "instances.json"), str(root / "images")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    train_json, train_images = make_shapes(root / "train", 256, seed=0)
    val_json, val_images = make_shapes(root / "val", 48, seed=1)
    return [f"data.train_json={train_json}", f"data.train_images={train_images}",
            f"data.val_json={val_json}", f"data.val_images={val_images}"]


def small_run(out_dir, shapes, steps: int, *extra: str) -> DetectorConfig:
    """The shipped tiny config, narrowed so a test run is short: d_model 64, 1+2 layers, 64-80 px images."""
    return load_config(DetectorConfig, TINY, shapes + [
        f"train.out_dir={out_dir}", f"train.steps={steps}", "train.batch_size=16", "model.d_model=64",
        "model.ffn_dim=128", "model.encoder_layers=1", "model.decoder_layers=2", "model.queries=8",
        "train.lr=1.0e-3", "train.backbone_lr=1.0e-3", "train.lr_drop_at=0.85", "train.scale_range=[56,72]",
        "train.max_size=96", "train.val_size=64", f"train.val_every={steps}", f"train.checkpoint_every={steps}",
        *extra])


def random_init_detector(cfg: DetectorConfig, seed: int) -> Detector:
    """A model of ``cfg`` (the narrowed one that trains), as initialised before training."""
    torch.manual_seed(seed)
    model = build_model(cfg.model, CATEGORIES)
    return Detector(model, map_labels(model.config.id2label, CATEGORIES))


def test_tiny_conditional_detr_learns(tmp_path, shapes):
    torch.manual_seed(0)
    cfg = small_run(tmp_path / "run", shapes, 350)
    result = train_detector(cfg, progress=False)

    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "train_log.jsonl") if "loss" in r]
    assert len(losses) == 350
    assert sum(losses[-50:]) / 50 < 0.7 * sum(losses[:50]) / 50, (losses[:50], losses[-50:])

    trained = load_detector(str(tmp_path / "run"), categories=CATEGORIES)  # the best model, by val AP
    ap_trained = evaluate(trained, cfg.data.val_json, cfg.data.val_images, 64, 96)
    assert ap_trained == pytest.approx(result["val"], abs=1e-9)  # best == last here: one validation
    random_ap = [evaluate(random_init_detector(cfg, seed), cfg.data.val_json, cfg.data.val_images, 64, 96)["AP"]
                 for seed in range(3)]  # random-init models of the same config, same evaluation
    # bench/bench_detector_train.py (OMP_NUM_THREADS=1): random init AP 5e-5..4e-4 (5 seeds); 350 steps: AP 0.084.
    floor = 0.01
    assert max(random_ap) < floor / 10, random_ap
    assert ap_trained["AP"] > floor, ap_trained


def test_checkpoint_resume_and_self_describing_folder(tmp_path, shapes):
    """Stopping after 4 steps and resuming to 8 gives the same weights as 8 steps straight."""
    same = ("train.checkpoint_every=4", "train.lr_drop_at=2.0")  # no drop: the schedule may not depend on steps
    straight = train_detector(small_run(tmp_path / "a", shapes, 8, *same), progress=False)
    train_detector(small_run(tmp_path / "b", shapes, 4, *same), progress=False)
    resumed = train_detector(small_run(tmp_path / "b", shapes, 8, *same), progress=False)
    assert resumed["step"] == straight["step"] == 8
    a = load_detector(str(tmp_path / "a" / "checkpoint")).model.state_dict()
    b = load_detector(str(tmp_path / "b" / "checkpoint")).model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], msg=key)
    # The folder describes itself: classes by name, normalisation, metrics of the best model.
    config = json.loads((tmp_path / "b" / "checkpoint" / "config.json").read_text())
    assert config["model_type"] == "conditional_detr"
    assert sorted(config["id2label"].values()) == sorted(c["name"] for c in CATEGORIES)
    assert (tmp_path / "b" / "best" / "metrics.json").is_file()
    assert not list((tmp_path / "b").glob(".*"))  # no temporary folders left behind
    assert (tmp_path / "b" / "config.yaml").is_file()
    # Without categories given, the trained model still reports its dataset's ids, not its class indices.
    trained = load_detector(str(tmp_path / "b"))
    assert {trained.model.config.id2label[label]: cid for label, cid in trained.label_map.items()} == {
        c["name"]: c["id"] for c in CATEGORIES}
    with pytest.raises(ValueError, match="different config.*train.lr"):  # not a silent mix of two recipes
        train_detector(small_run(tmp_path / "b", shapes, 10, *same, "train.lr=5.0e-4"), progress=False)
    for bad in ("train.steps=0", "train.val_every=0", "train.lr=-1", "train.scale_range=[160,96]"):
        with pytest.raises(ConfigError):
            small_run(tmp_path / "c", shapes, 4, bad)


def test_raising_steps_keeps_a_learning_rate_drop_already_taken(tmp_path, shapes):
    """Extending a run whose lr already dropped (after step 2 of 4) goes on at the dropped lr; the drop does not
    move to step 6 of 12, which would train step 6 at the full lr again."""
    train_detector(small_run(tmp_path / "run", shapes, 4, "train.lr_drop_at=0.5"), progress=False)
    train_detector(small_run(tmp_path / "run", shapes, 12, "train.lr_drop_at=0.5"), progress=False)
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "run" / "train_log.jsonl") if "lr" in r]
    assert lrs == pytest.approx([1e-3] * 2 + [1e-4] * 10)


def test_a_run_killed_at_its_lr_drop_keeps_it_when_steps_rise(tmp_path, shapes, monkeypatch):
    import detector.train

    save = detector.train.save_model

    def save_then_die(model, dest, *args, train_state=None, **kwargs):  # killed right after the step-2 checkpoint
        save(model, dest, *args, train_state=train_state, **kwargs)
        if train_state is not None and train_state["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(detector.train, "save_model", save_then_die)
    with pytest.raises(KeyboardInterrupt):  # the drop is after step 2 of 4
        train_detector(small_run(tmp_path / "run", shapes, 4, "train.lr_drop_at=0.5", "train.checkpoint_every=2"),
                       progress=False)
    monkeypatch.undo()
    train_detector(small_run(tmp_path / "run", shapes, 8, "train.lr_drop_at=0.5", "train.checkpoint_every=2"),
                   progress=False)
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "run" / "train_log.jsonl") if "lr" in r]
    assert lrs == pytest.approx([1e-3] * 2 + [1e-4] * 6)  # not back to 1e-3 until a drop moved to step 4


def test_bad_training_data_fails_before_the_first_step(tmp_path, shapes):
    train_json = json.loads(Path(shapes[0].split("=", 1)[1]).read_text())
    (tmp_path / "no-boxes.json").write_text(json.dumps({**train_json, "annotations": []}))
    (tmp_path / "no-images.json").write_text(json.dumps({**train_json, "images": [], "annotations": []}))
    missing = {**train_json, "images": [*train_json["images"], {"id": 999, "file_name": "gone.png", "height": 64,
                                                                 "width": 80}]}
    (tmp_path / "missing.json").write_text(json.dumps(missing))
    # validation ground truth with the two classes' ids swapped: it would score each class against the other's boxes
    val_json = json.loads(Path(shapes[2].split("=", 1)[1]).read_text())
    ids = {c["id"]: c["id"] for c in val_json["categories"]}
    first, second = sorted(ids)[:2]
    ids[first], ids[second] = second, first
    (tmp_path / "swapped.json").write_text(json.dumps({
        **val_json, "categories": [{**c, "id": ids[c["id"]]} for c in val_json["categories"]],
        "annotations": [{**a, "category_id": ids[a["category_id"]]} for a in val_json["annotations"]]}))
    for key, name, message in (("train_json", "no-boxes", "no image has a non-crowd box"),
                               ("train_json", "missing", "not in"),
                               ("val_json", "no-images", "no images"),
                               ("val_json", "swapped", "categories .* differ")):
        cfg = small_run(tmp_path / name, shapes, 2, f"data.{key}={tmp_path / name}.json")
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            train_detector(cfg, progress=False)
        assert not (tmp_path / name / "checkpoint").exists()


def test_augmentation_keeps_boxes_on_their_objects(tmp_path, shapes):
    """After flip + random resize the target box still encloses the drawn object (checked on the pixels)."""
    from detector.data import CocoDetection, augmentation

    cfg = small_run(tmp_path / "aug", shapes, 1, "train.hflip=1.0", "train.color_jitter=0.0")
    data = CocoDetection(cfg.data.train_json, cfg.data.train_images, {3: 0, 8: 1}, augmentation(cfg.train))
    for index in range(8):
        image, target = data[(index, index)]
        h, w = image.shape[-2:]
        assert cfg.train.scale_range[0] <= min(h, w) <= max(cfg.train.scale_range[1], cfg.train.max_size)
        cx, cy, bw, bh = (target["boxes"][0] * torch.tensor([w, h, w, h])).tolist()
        colour = image[0] - image[2] if target["class_labels"][0] == 0 else image[2] - image[0]
        inside = colour[round(cy - bh / 2):round(cy + bh / 2), round(cx - bw / 2):round(cx + bw / 2)]
        assert (colour > 0.5).sum() > 0 and (inside > 0.5).sum() >= 0.9 * (colour > 0.5).sum()
    # Integer boxes (as this JSON has) are resized as the same float boxes are, not truncated at each step.
    coco = json.loads(Path(cfg.data.train_json).read_text())
    for a in coco["annotations"]:
        a["bbox"] = [v + 0.0 for v in a["bbox"]]
    (tmp_path / "float.json").write_text(json.dumps(coco))
    floats = CocoDetection(tmp_path / "float.json", cfg.data.train_images, {3: 0, 8: 1}, augmentation(cfg.train))
    for index in range(4):
        torch.testing.assert_close(data[(index, index)][1]["boxes"], floats[(index, index)][1]["boxes"])
    cfg.train.scale_range = (100, 150)
    assert augmentation(cfg.train).transforms[2].min_size == [100, 108, 116, 124, 132, 140, 148, 150]


def test_train_detector_cli(tmp_path, shapes):
    from pipeline.cli import main

    args = ["train-detector", "--config", str(TINY)]
    for item in shapes + [f"train.out_dir={tmp_path / 'cli'}", "train.steps=2", "train.batch_size=4",
                          "train.val_every=2", "train.val_size=64", "train.max_size=96"]:
        args += ["--set", item]
    assert main(args) == 0
    assert (tmp_path / "cli" / "best" / "config.json").is_file()
    assert main(["train-detector", "--config", str(TINY), "--set", "data.train_json=/nonexistent.json"]) == 2


def test_fine_tune_from_a_model_with_other_classes_gets_a_new_head(tmp_path, shapes):
    cfg = small_run(tmp_path / "ft", shapes, 2)
    torch.manual_seed(1)
    pretrained = build_model(cfg.model, [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "cow"}])
    pretrained.save_pretrained(tmp_path / "pretrained")
    cfg.train.init = str(tmp_path / "pretrained")
    cfg.train.freeze_backbone = True
    train_detector(cfg, progress=False)
    tuned = load_detector(str(tmp_path / "ft" / "checkpoint"), categories=CATEGORIES)
    assert sorted(tuned.model.config.id2label.values()) == sorted(c["name"] for c in CATEGORIES)
    before, after = pretrained.state_dict(), tuned.model.state_dict()
    assert after["class_labels_classifier.weight"].shape[0] == 2  # sigmoid family: one logit per class
    backbone = [k for k in before if k.startswith("model.backbone.")]
    assert all(torch.equal(before[k], after[k]) for k in backbone)  # frozen: the pretrained backbone as it was
    assert not torch.equal(before["bbox_predictor.layers.0.weight"], after["bbox_predictor.layers.0.weight"])


def test_a_new_class_list_gets_a_new_head_even_with_as_many_classes(tmp_path):
    from detector.model import load_model

    torch.manual_seed(1)
    old = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    pretrained = build_model(load_config(DetectorConfig, TINY).model, old)
    pretrained.save_pretrained(tmp_path / "pretrained")
    model, _, _ = load_model(str(tmp_path / "pretrained"), id2label={0: "circle", 1: "square"})
    before, after = pretrained.state_dict(), model.state_dict()
    assert model.config.id2label == {0: "circle", 1: "square"}
    assert not torch.equal(before["class_labels_classifier.weight"], after["class_labels_classifier.weight"])
    assert torch.equal(before["bbox_predictor.layers.0.weight"], after["bbox_predictor.layers.0.weight"])
