"""Training the scale predictor in both modes on the synthetic data (ardet.synthetic), where ``small`` images hold
only 6-20 px objects and ``large`` images one object of >= 100 px plus medium ones: the trained predictor must ask
for larger inputs for the small-object images, and each mode's objective must fall."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ardet.config import load_config
from ardet.images import load_image
from ardet.synthetic import make_dataset
from pipeline.cli import main
from scale_predictor import create_predictor, load_predictor
from scale_predictor.data import CocoScaleData
from scale_predictor.losses import distribution_loss, oracle_loss
from scale_predictor.train import TrainScaleConfig, train

CONFIGS = Path(__file__).parents[1] / "configs" / "scale_predictor"
FAST = ["predictor.name=mobilenetv3-small-050", "optim.batch_size=8", "optim.warmup_steps=5", "optim.lr=0.003",
        "log_every=1"]
ELASTIC = FAST + ["mode=elastic", "predictor.args={thumb: 64, output: factor, range: [0.25, 4.0], multiple: 8}"]
ORACLE_SIZES = [96, 128, 192, 256, 384, 512, 768]
ORACLE = FAST + ["mode=oracle", "oracle.detector=synthetic-size-quality", f"oracle.short_sides={ORACLE_SIZES}",
                 "predictor.args={thumb: 64, output: short_side, range: [96, 768], multiple: 32}"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    ann = make_dataset(root, seed=0, num_train=36, num_val=0, num_test=0, image_size=192)["train"]
    coco = json.loads(ann.read_text())
    kinds = {im["id"]: im["kind"] for im in coco["images"]}
    assert {"small", "large"} <= set(kinds.values())
    return {"annotations": ann, "images": ann.parent / "images", "coco": coco, "kinds": kinds}


def _config(synth, out, overrides):
    return load_config(TrainScaleConfig, None, [f"data.annotations={synth['annotations']}",
                                                f"data.images={synth['images']}", f"out_dir={out}", *overrides])


def _predicted_short_sides(model, synth, knob=None):
    """Median predicted short side of the small-object images and of the large-object images."""
    by_kind = {"small": [], "large": []}
    images = [im for im in synth["coco"]["images"] if im["kind"] in by_kind]
    decisions = model.predict([load_image(synth["images"] / im["file_name"]).pixels for im in images], knob=knob)
    for im, d in zip(images, decisions):
        by_kind[im["kind"]].append(d.short_side)
    return {k: float(np.median(v)) for k, v in by_kind.items()}


def _all_items(cfg):
    data = CocoScaleData(cfg.data.annotations, cfg.data.images, thumb=64, flip=False)
    items = [data[(i, 0)] for i in range(len(data)) if len(data.boxes(i))]
    return (torch.stack([it["thumb"] for it in items]), torch.stack([it["native"] for it in items]),
            [it["boxes"] for it in items], [data.images[it["index"]]["id"] for it in items])


def _synthetic_quality(coco):
    """A stand-in detector: quality = mean over the image's objects of sigmoid((side at the input scale - 24) / 4),
    so small objects need large inputs; GFLOPs grow with the input's pixel count."""
    sides = {}
    for a in coco["annotations"]:
        sides.setdefault(a["image_id"], []).append(math.sqrt(a["bbox"][2] * a["bbox"][3]))
    calls = []

    def run(image, size):
        calls.append(image.id)
        scale = min(size) / min(image.size)
        quality = float(np.mean([1 / (1 + math.exp(-(s * scale - 24) / 4)) for s in sides[image.id]]))
        return quality, size[0] * size[1] / 1e4

    return run, calls


def test_elastic_training_scales_small_objects_up(synth, tmp_path):
    cfg = _config(synth, tmp_path / "run", ELASTIC + ["optim.steps=60"])
    path = train(cfg, progress=False)
    model = load_predictor(path)
    sizes = _predicted_short_sides(model, synth)
    assert sizes["small"] > 1.5 * sizes["large"], sizes

    # The objective falls on the whole set, from the fresh model's (which predicts u = 1/2 for every image). The scale
    # loss trains u toward a fixed point (the factor inside P_up is detached), so its falling part is the KL
    # divergence BCE(u, P_up) - H(P_up), recomputed here per box with the bins (< 32^2, 32^2-64^2, >= 64^2).
    thumbs, native, boxes, _ = _all_items(cfg)

    def objective(u):
        factors = (model.short_side(u, native) / native.min(-1).values).tolist()
        kl = []
        for ui, fi, b in zip(u.tolist(), factors, boxes):
            area = (b[:, 2] * b[:, 3]).double().numpy() * fi ** 2
            p = np.clip(1 / (1 + np.exp(-6 + 12 * (area - 1024) / 8192)), 1e-9, 1 - 1e-9)
            per_box = p * np.log(p / ui) + (1 - p) * np.log((1 - p) / (1 - ui))
            which = np.digitize(area, [1024, 4096])
            kl.append(sum(per_box[which == k].mean() for k in np.unique(which)))
        return float(np.mean(kl)) + distribution_loss(u, cfg.elastic.mean).item()

    with torch.no_grad():
        trained = objective(model(thumbs, native))
    assert trained < 0.85 * objective(torch.full((len(thumbs),), 0.5)), trained
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in records] == list(range(60)) and all(math.isfinite(r["loss"]) for r in records)
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "checkpoint.pt").is_file()


def test_oracle_training_and_cheap_retraining_from_the_cache(synth, tmp_path):
    run, calls = _synthetic_quality(synth["coco"])
    cache = tmp_path / "table.jsonl"
    cfg = _config(synth, tmp_path / "argmin", ORACLE + ["optim.steps=60", "oracle.target=argmin", "oracle.lam=0.002",
                                                         f"oracle.cache={cache}"])
    model = load_predictor(train(cfg, run=run, progress=False))
    n_images = sum(1 for im in synth["coco"]["images"] if any(a["image_id"] == im["id"]
                                                              for a in synth["coco"]["annotations"]))
    assert len(calls) == n_images * len(ORACLE_SIZES)  # every (image, size) once
    sizes = _predicted_short_sides(model, synth)
    assert sizes["small"] > 1.5 * sizes["large"], sizes

    # The labels' BCE on the whole set falls from the fresh model's (u = 1/2 everywhere).
    thumbs, native, _, ids = _all_items(cfg)
    table = [json.loads(line) for line in open(cache)][1:]
    best = {}
    for r in table:  # argmin over sizes of 1 - quality + lam * GFLOPs, recomputed here from the raw cache
        cost = 1 - r["quality"] + 0.002 * r["gflops"]
        if r["image_id"] not in best or cost < best[r["image_id"]][0]:
            best[r["image_id"]] = (cost, r["short_side"])
    target = torch.tensor([math.log(best[i][1] / 96) / math.log(768 / 96) for i in ids])
    with torch.no_grad():
        trained = oracle_loss(model(thumbs, native), target).item()
    assert trained < 0.8 * oracle_loss(torch.full_like(target, 0.5), target).item()

    # Retraining on the cached table (soft targets, through the CLI, no detector named) runs no detector at all.
    out = tmp_path / "soft"
    assert main(["train-scale", "--config", str(CONFIGS / "oracle.yaml"), "--no-progress",
                 *[f"--set={o}" for o in ORACLE + ["optim.steps=40", "oracle.target=soft", f"oracle.cache={cache}",
                                                   "oracle.detector=null",
                                                   f"out_dir={out}", f"data.annotations={synth['annotations']}",
                                                   f"data.images={synth['images']}", "data.max_images=null",
                                                   "oracle.lam=0.002"]]]) == 0
    sizes = _predicted_short_sides(load_predictor(out / "predictor.safetensors"), synth)
    assert sizes["small"] > 1.5 * sizes["large"], sizes
    assert len(calls) == n_images * len(ORACLE_SIZES)
    # A table made for other annotations (image ids restart at 1 in every COCO file) is refused, not mixed in.
    reuse = ["optim.steps=2", "oracle.target=soft", f"oracle.cache={cache}", "oracle.detector=null"]
    train(_config(synth, tmp_path / "nodet", [*ORACLE, *reuse]), progress=False)
    other = dict(synth["coco"], annotations=synth["coco"]["annotations"][:-1])
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="annotations_sha256"):
        train(_config({**synth, "annotations": tmp_path / "other.json"}, tmp_path / "other", [*ORACLE, *reuse]),
              progress=False)


def test_oracle_knob_traces_the_trade_off(synth, tmp_path):
    """One knob-conditioned model: a larger compute penalty (knob) must give smaller inputs to small-object images."""
    run, _ = _synthetic_quality(synth["coco"])
    args = "predictor.args={thumb: 64, output: short_side, range: [96, 768], multiple: 32, knob: true}"
    cfg = _config(synth, tmp_path / "knob", ORACLE + [args, "optim.steps=150", "oracle.target=argmin",
                                                       "oracle.lambda_max=0.03"])
    model = load_predictor(train(cfg, run=run, progress=False))
    cheap, accurate = (_predicted_short_sides(model, synth, knob=k) for k in (1.0, 0.0))
    assert accurate["small"] > 1.5 * cheap["small"], (accurate, cheap)


def test_resume_continues_exactly(synth, tmp_path):
    steps = ELASTIC + ["checkpoint_every=3", "data.native_jitter=[0.7, 1.4]"]
    straight = train(_config(synth, tmp_path / "a", steps + ["optim.steps=6"]), progress=False)
    train(_config(synth, tmp_path / "b", steps + ["optim.steps=3"]), progress=False)
    with open(tmp_path / "b" / "metrics.jsonl", "a") as log:  # killed after logging steps past the checkpoint
        log.write('{"step": 3, "loss": 0.0}\n{"step": 4, "loss": 0.0}\n')
    resumed = train(_config(synth, tmp_path / "b", steps + ["optim.steps=6"]), progress=False)
    a, b = load_predictor(straight).state_dict(), load_predictor(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    logged = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["step"] for r in logged] == list(range(6)) and all(r["loss"] > 0 for r in logged)  # each step once
    with pytest.raises(ValueError, match="different config"):
        train(_config(synth, tmp_path / "b", steps + ["optim.steps=9", "optim.lr=0.01"]), progress=False)


def test_a_non_finite_loss_stops_training_before_the_step(synth, tmp_path, monkeypatch):
    import scale_predictor.train as train_module

    calls, elastic_loss = [], train_module._elastic_loss

    def nan_at_third_step(*args):
        loss, parts = elastic_loss(*args)
        calls.append(1)
        return (loss * math.nan if len(calls) == 3 else loss), parts

    monkeypatch.setattr(train_module, "_elastic_loss", nan_at_third_step)
    with pytest.raises(FloatingPointError, match="step 2 is nan"):
        train(_config(synth, tmp_path, ELASTIC + ["checkpoint_every=1", "optim.steps=4"]), progress=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2


def test_cli_elastic_config_runs_and_reports_user_errors(synth, tmp_path, capsys):
    out = tmp_path / "cli"
    sets = [f"data.annotations={synth['annotations']}", f"data.images={synth['images']}", f"out_dir={out}",
            "optim.steps=2", "optim.batch_size=4", "optim.warmup_steps=1"]
    assert main(["train-scale", "--config", str(CONFIGS / "elastic.yaml"), "--no-progress",
                 *[f"--set={s}" for s in sets]]) == 0
    assert capsys.readouterr().out.strip() == str(out / "predictor.safetensors")
    model = load_predictor(out)
    assert model.spec == create_predictor("mobilenetv3-small", output="factor", range=[0.5, 2.0], multiple=8,
                                          max_long=1024).spec
    assert main(["train-scale", "--config", str(CONFIGS / "elastic.yaml"),
                 "--set", f"data.annotations={tmp_path / 'missing.json'}"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train-scale", "--config", str(CONFIGS / "oracle.yaml"), "--no-progress",
                 *[f"--set={s}" for s in sets + [f"out_dir={tmp_path / 'nodet'}"]]]) == 2
    assert "oracle.detector" in capsys.readouterr().err
    assert main(["train-scale", "--config", str(CONFIGS / "oracle.yaml"), "--set", "oracle.short_sides=[]"]) == 2
    assert "short_sides" in capsys.readouterr().err
    # Annotations of a category the file does not list were skipped silently; the COCO file is validated now.
    coco = dict(synth["coco"], annotations=[{**synth["coco"]["annotations"][0], "category_id": 77}])
    (tmp_path / "badcat.json").write_text(json.dumps(coco))
    assert main(["train-scale", "--config", str(CONFIGS / "elastic.yaml"), "--no-progress",
                 *[f"--set={s}" for s in sets + [f"data.annotations={tmp_path / 'badcat.json'}"]]]) == 2
    assert "category_id" in capsys.readouterr().err
    # A folder holding a predictor no run there can resume (a shipped model) is not overwritten
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "predictor.safetensors").write_bytes((out / "predictor.safetensors").read_bytes())
    assert main(["train-scale", "--config", str(CONFIGS / "elastic.yaml"), "--no-progress",
                 *[f"--set={s}" for s in sets + [f"out_dir={shipped}"]]]) == 2
    assert "would overwrite it" in capsys.readouterr().err
    assert (shipped / "predictor.safetensors").read_bytes() == (out / "predictor.safetensors").read_bytes()
    (out / "checkpoint.pt").unlink()  # what a refused resume says to do to start over: then it starts over
    assert main(["train-scale", "--config", str(CONFIGS / "elastic.yaml"), "--no-progress",
                 *[f"--set={s}" for s in sets]]) == 0


def test_oracle_mode_with_a_real_detector(synth, tmp_path, capsys):
    """The wiring of ``ardet train-scale`` oracle mode: detector.load_detector + sr.resample + per-image AP."""
    import shutil

    from ardet.config import load_config
    from detector import DetectorConfig, build_model

    tiny = load_config(DetectorConfig, Path(__file__).parents[1] / "configs" / "detector" / "tiny-conditional-detr.yaml")
    torch.manual_seed(0)
    build_model(tiny.model, synth["coco"]["categories"]).save_pretrained(tmp_path / "model")
    spec = tmp_path / "model"
    out = tmp_path / "det"
    sets = [f"data.annotations={synth['annotations']}", f"data.images={synth['images']}", f"out_dir={out}",
            "data.max_images=3", "oracle.short_sides=[96, 192]", f"oracle.detector={spec}", "optim.steps=1",
            "optim.batch_size=2", "predictor.name=mobilenetv3-small-050", "predictor.args={thumb: 32, range: [96, 384]}"]
    assert main(["train-scale", "--config", str(CONFIGS / "oracle.yaml"), "--no-progress",
                 *[f"--set={s}" for s in sets]]) == 0
    records = [json.loads(line) for line in open(out / "oracle_table.jsonl")]
    assert len(records[0]["meta"]["detector_sha256"]) == 64 and len(records) == 1 + 3 * 2
    for small, large in zip(records[1::2], records[2::2]):
        assert (small["short_side"], large["short_side"]) == (96, 192) and small["size"] == [96, 96]
        assert 0.0 <= small["quality"] <= 1.0 and 0.0 <= large["quality"] <= 1.0
        assert 0 < small["gflops"] < large["gflops"]  # measured FLOPs of resampling + detection grow with the size
    assert load_predictor(out).predict([torch.rand(3, 50, 60)])[0].short_side >= 96
    # The cache names the detector by its files' contents: the same model under another path reuses it without
    # running it, other weights under the same path are refused rather than mixed in, and with the detector gone
    # a complete table is still read (with a warning).
    def again(detector_path, name, *more):
        return main(["train-scale", "--config", str(CONFIGS / "oracle.yaml"), "--no-progress",
                     *[f"--set={s}" for s in sets + [f"oracle.cache={out / 'oracle_table.jsonl'}",
                                                     f"oracle.detector={detector_path}", f"out_dir={tmp_path / name}",
                                                     *more]]])

    shutil.copytree(spec, tmp_path / "moved")
    assert again(tmp_path / "moved", "again") == 0 and len(list(open(out / "oracle_table.jsonl"))) == 1 + 3 * 2
    torch.manual_seed(1)
    build_model(tiny.model, synth["coco"]["categories"]).save_pretrained(tmp_path / "moved")  # retrained in place
    assert again(tmp_path / "moved", "other") == 2
    assert "made with other detector_sha256" in capsys.readouterr().err
    assert again(tmp_path / "absent-detector", "gone") == 0
    # ... but no entries are added under a detector that cannot be identified.
    assert again(tmp_path / "absent-detector", "grow", "oracle.short_sides=[96, 128, 192]") == 2
    assert "cannot be computed under its name" in capsys.readouterr().err
