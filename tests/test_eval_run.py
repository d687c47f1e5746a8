"""`ardet eval` end to end: records, resume after SIGKILL, torchrun sharding, and metrics equal to pycocotools."""
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ardet.images import LoadedImage
from ardet.files import module_sha256
from detector import Detections, load_detector
from ardet.synthetic import make_split
from ardet.config import ConfigError, load_config
from eval import CocoDataset, EvalConfig, ImageResult, STAT_NAMES, check_resumable, run_evaluation

REPO = Path(__file__).parents[1]
NUM_IMAGES = 16


def ardet(*args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A generated COCO set, a tiny random-init DETR whose classes are the set's categories, an eval config, and
    one uninterrupted single-process run to compare everything else with."""
    root = tmp_path_factory.mktemp("evalrun")
    val_json = make_split(root / "data", seed=0, split="val", num_images=NUM_IMAGES, image_size=(128, 160))
    paths = {"val_json": str(val_json), "val_images": str(root / "data" / "images")}
    categories = json.loads(val_json.read_text())["categories"]
    detector_cfg = yaml.safe_load((REPO / "configs/eval/detr-tiny.yaml").read_text())
    detector_cfg["model"]["categories"] = [{"id": c["id"], "name": c["name"]} for c in categories]
    del detector_cfg["model"]["num_labels"]
    (root / "detector.yaml").write_text(yaml.safe_dump(detector_cfg))
    config = {"dataset": {"annotations": paths["val_json"], "images": paths["val_images"]},
              "detector": {"spec": str(root / "detector.yaml")},
              "policies": [{"kind": "fixed", "short": 128, "max_size": 256},
                           {"kind": "fixed", "short": 80, "max_size": 160, "resampler": "bicubic"}]}
    (root / "eval.yaml").write_text(yaml.safe_dump(config))
    done = ardet("eval", "--config", root / "eval.yaml", "--out", root / "full", "--no-progress")
    assert done.returncode == 0, done.stderr
    return root, paths


def read(run: Path):
    summary = json.loads((run / "summary.json").read_text())
    detections = {p.stem: json.loads(p.read_text()) for p in sorted((run / "detections").glob("*.json"))}
    return summary, detections


def pycocotools_stats(gt_json, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_json)
        ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(dets))), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats]


def test_run_writes_every_artefact_and_matches_pycocotools(setup):
    root, paths = setup
    run = root / "full"
    summary, detections = read(run)
    assert sorted(detections) == ["fixed-128-bilinear-max256", "fixed-80-bicubic-max160"]
    assert (run / "config.yaml").exists() and (run / "records" / "rank0.jsonl").exists()
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 * NUM_IMAGES
    assert [r["image_id"] for r in records[::2]] == list(range(1, NUM_IMAGES + 1))  # dataset order
    r = records[0]
    assert set(r["flops"]) == {"predictor", "resample", "detector"} and r["flops"]["detector"] > 0
    assert r["size"][0] == 128 and r["flops_source"]["detector"] == "counted"
    total_dets = 0
    for policy in summary["policies"]:
        dets = detections[policy["policy"]]
        total_dets += len(dets)
        assert [policy["stats"][n] for n in STAT_NAMES] == pycocotools_stats(paths["val_json"], dets)
    assert total_dets > NUM_IMAGES  # the tiny detector does output boxes: the comparison is not of empty files
    # what made the numbers: the detector file's sha256, the device, the command, the policies' entries, versions
    made = summary["provenance"]
    torch.manual_seed(0)  # the config's seed: the same random init as the run's
    loaded = module_sha256(load_detector(str(root / "detector.yaml")).model)
    assert made["detector"]["sha256"] == loaded == json.loads((run / "weights.json").read_text())["detector"]
    assert made["device"] == "cpu" and made["command"].endswith(f"--out {run} --no-progress")
    assert made["policies"]["fixed-80-bicubic-max160"] == {"kind": "fixed", "short": 80, "max_size": 160,
                                                           "resampler": "bicubic"}
    assert made["environment"]["versions"]["torch"] == torch.__version__.split("+")[0]


def test_sigkill_then_resume_gives_identical_metrics(setup):
    root, _ = setup
    out = root / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "eval", "--config", str(root / "eval.yaml"),
                             "--out", str(out), "--no-progress"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / "records" / "rank0.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if records.exists() and records.read_bytes().count(b"\n") >= 5:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    written = records.read_bytes().count(b"\n")
    assert 5 <= written < 2 * NUM_IMAGES, "the run was not killed mid-way"
    assert not (out / "summary.json").exists()

    resumed = ardet("eval", "--config", root / "eval.yaml", "--out", out, "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(lines) == len({(r["policy"], r["image_id"]) for r in lines}) == 2 * NUM_IMAGES  # no redone pair
    (s1, d1), (s2, d2) = read(root / "full"), read(out)
    assert d1 == d2
    assert [p["stats"] for p in s1["policies"]] == [p["stats"] for p in s2["policies"]]

    cfg = load_config(EvalConfig, root / "eval.yaml", ["dataset.limit=3"])
    with pytest.raises(ConfigError, match="config differs .* in dataset.limit"):  # a resume must not mix two configs
        check_resumable(cfg, out)
    check_resumable(load_config(EvalConfig, root / "eval.yaml", [f"output={root}/elsewhere"]), out)


def test_torchrun_two_gloo_ranks_shard_exactly_and_match(setup):
    root, _ = setup
    out = root / "dist"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "pipeline.cli", "eval", "--config", str(root / "eval.yaml"), "--out", str(out),
                           "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    shards = [{(json.loads(line)["policy"], json.loads(line)["image_id"])
               for line in (out / "records" / f"rank{r}.jsonl").read_text().splitlines()} for r in (0, 1)]
    assert not shards[0] & shards[1]
    assert len(shards[0]) + len(shards[1]) == 2 * NUM_IMAGES
    assert {i for _, i in shards[1]} == set(range(2, NUM_IMAGES + 1, 2))  # image_ids[rank::world]
    (s1, d1), (s2, d2) = read(root / "full"), read(out)
    assert d1 == d2  # same config, same numbers: a separate run in separate processes
    assert [p["stats"] for p in s1["policies"]] == [p["stats"] for p in s2["policies"]]
    assert [p["gflops"]["mean"] for p in s1["policies"]] == [p["gflops"]["mean"] for p in s2["policies"]]


class EchoPolicy:
    """A deterministic stand-in (tests only): the image's GT boxes shifted by ``shift`` pixels, score by order."""

    def __init__(self, gt, name, shift):
        self.name, self.shift, self.calls = name, shift, 0
        self.boxes = {}
        for a in gt["annotations"]:
            self.boxes.setdefault(a["image_id"], []).append((a["bbox"], a["category_id"]))

    def __call__(self, image: LoadedImage) -> ImageResult:
        self.calls += 1
        items = self.boxes.get(image.id, [])
        boxes = torch.tensor([[b[0] + self.shift, b[1], b[2], b[3]] for b, _ in items]).reshape(-1, 4)
        dets = Detections(boxes.float(), torch.linspace(0.9, 0.5, len(items)),
                          torch.tensor([c for _, c in items], dtype=torch.int64))
        return ImageResult(dets, image.size, 1.0, "none", {"detector": 1000}, {"detector": 0.001})


def test_harness_resumes_pairs_and_evaluates_like_pycocotools(setup, tmp_path):
    _, paths = setup
    data = CocoDataset(paths["val_json"], paths["val_images"], limit=10)
    a, b = EchoPolicy(data.gt, "exact", 0.0), EchoPolicy(data.gt, "shifted", 3.0)
    run_evaluation([a], CocoDataset(paths["val_json"], paths["val_images"], limit=2), tmp_path, progress=False)
    with pytest.raises(ValueError, match="--resume"):  # never silently start over a run's records
        run_evaluation([a, b], data, tmp_path, progress=False)
    summary = run_evaluation([a, b], data, tmp_path, resume=True, progress=False)
    assert (a.calls, b.calls) == (10, 10)  # the two recorded (exact, image) pairs were not run again
    dets = json.loads((tmp_path / "detections" / "shifted.json").read_text())
    gt_subset = {**data.gt, "images": [i for i in data.gt["images"] if i["id"] in data.image_ids]}
    gt_subset["annotations"] = [x for x in data.gt["annotations"] if x["image_id"] in data.image_ids]
    (tmp_path / "gt.json").write_text(json.dumps(gt_subset))
    shifted = summary["policies"][1]
    assert [shifted["stats"][n] for n in STAT_NAMES] == pycocotools_stats(str(tmp_path / "gt.json"), dets)
    assert 0 < shifted["stats"]["AP"] < 1 and summary["policies"][0]["num_images"] == 10
    assert shifted["gflops"]["mean"]["detector"] == pytest.approx(1e-6)


def test_resume_against_regenerated_ground_truth_is_refused(tmp_path):
    """make-data with another seed rewrites the same files: the old records would be scored against new boxes."""
    def data(seed):
        make_split(tmp_path / "data", seed=seed, split="val", num_images=3, image_size=(128, 128))
        return CocoDataset(tmp_path / "data" / "annotations.json", tmp_path / "data" / "images")

    first = data(0)
    run_evaluation([EchoPolicy(first.gt, "exact", 0.0)], first, tmp_path / "run", progress=False)
    assert run_evaluation([EchoPolicy(first.gt, "exact", 0.0)], data(0), tmp_path / "run", resume=True,
                          progress=False)["policies"][0]["stats"]["AP"] == 1  # the same data: resumes
    second = data(1)
    with pytest.raises(ValueError, match="other ground truth"):
        run_evaluation([EchoPolicy(second.gt, "exact", 0.0)], second, tmp_path / "run", resume=True, progress=False)


def test_coco_mini_demo_produces_every_artefact(tmp_path):
    """The issue's done-criterion: real photos with real COCO ids, a random-init DETR, two fixed policies."""
    config = REPO / "configs" / "eval" / "coco-mini-tiny.yaml"
    gt_json = REPO / ".." / "shared" / "data" / "coco-mini" / "instances.json"
    if not gt_json.exists():
        pytest.skip(f"{gt_json} not present (the shared coco-mini data set)")
    run = tmp_path / "run"
    done = ardet("eval", "--config", config, "--out", run, "--no-progress")
    assert done.returncode == 0, done.stderr
    report = ardet("report", run, "--out", tmp_path / "report")
    assert report.returncode == 0, report.stderr
    for name in ("report.md", "pareto.png", "results.json", "results.csv"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    summary, detections = read(run)
    assert len(summary["policies"]) == 2 and summary["dataset"]["num_images"] == 4
    for policy in summary["policies"]:
        assert [policy["stats"][n] for n in STAT_NAMES] == pycocotools_stats(str(gt_json),
                                                                           detections[policy["policy"]])
        assert policy["gflops"]["mean"]["detector"] > 0 and policy["images_per_s"] > 0


def test_resume_with_other_detector_weights_is_refused(setup, tmp_path):
    """A model folder retrained (or replaced) in place between a run and its resume: the records of the old weights
    would be merged with the new ones'. The weights' identity is recorded at the start and checked on resume."""
    root, paths = setup
    torch.manual_seed(0)
    model = load_detector(str(root / "detector.yaml")).model
    model.save_pretrained(tmp_path / "model")
    config = yaml.safe_load((root / "eval.yaml").read_text())
    config["detector"]["spec"] = str(tmp_path / "model")
    config["policies"] = config["policies"][:1]
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(config))
    run = ["eval", "--config", tmp_path / "eval.yaml", "--out", tmp_path / "run", "--no-progress", "--limit", "4"]
    assert ardet(*run).returncode == 0
    assert ardet(*run, "--resume").returncode == 0  # the same weights resume
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    model.save_pretrained(tmp_path / "model")
    done = ardet(*run, "--resume")
    assert done.returncode == 2 and "other model weights (detector differ" in done.stderr, done.stderr


def test_sweep_evaluates_the_grid_and_reports_it_and_a_changed_predictor_stops_a_resume(setup, tmp_path):
    """`ardet sweep`: one policy per grid point (named by the entry's template), then the report over them. Its
    resume checks the scale predictor's weights as it checks the detector's."""
    from scale_predictor import create_predictor, save_predictor

    root, paths = setup
    torch.manual_seed(0)
    predictor = create_predictor("mobilenetv3-small-050", thumb=64, range=(64.0, 128.0), multiple=8, max_long=256)
    save_predictor(predictor, tmp_path / "predictor.safetensors")
    config = yaml.safe_load((root / "eval.yaml").read_text())
    config["policies"] = [{"kind": "adaptive", "predictor": str(tmp_path / "predictor.safetensors")}]
    config["sweep"] = [{"kind": "fixed", "max_size": 256, "name": "short{short}", "sweep": {"short": [64, 96]}}]
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    run = ["sweep", "--config", tmp_path / "sweep.yaml", "--out", tmp_path / "run", "--no-progress", "--limit", "2"]
    done = ardet(*run)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [p["policy"] for p in results["policies"]] == ["adaptive-bilinear", "short64", "short96"]
    assert [p["size"][0] for p in map(json.loads, (tmp_path / "run" / "records.jsonl").read_text().splitlines())
            if p["policy"].startswith("short")][:2] == [64, 96]
    assert (tmp_path / "run" / "report.md").is_file() and (tmp_path / "run" / "pareto.png").is_file()
    with torch.no_grad():
        predictor.head[-1].bias.add_(1.0)
    save_predictor(predictor, tmp_path / "predictor.safetensors")
    done = ardet(*run, "--resume")
    assert done.returncode == 2 and "other model weights (predictor" in done.stderr, done.stderr
