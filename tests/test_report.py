"""`ardet report` and `ardet coco-eval`: Pareto logic against brute force, artefacts from run folders, the coco-eval
command against pycocotools."""
import contextlib
import csv
import io
import json
import random
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from eval import STAT_NAMES, pareto_front, write_report
from eval.report import load_rows
from pipeline.cli import main

SHARED = Path(__file__).parents[1] / ".." / "shared"


def dominated(i, costs, values):
    return any(costs[j] <= costs[i] and values[j] >= values[i] and (costs[j] < costs[i] or values[j] > values[i])
               for j in range(len(costs)) if values[j] is not None)


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_equals_brute_force(seed):
    rng = random.Random(seed)
    costs = [rng.choice([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) for _ in range(25)]  # ties on purpose
    values = [rng.choice([None, 0.1, 0.2, 0.3, 0.4, 0.5]) for _ in range(25)]
    front = pareto_front(costs, values)
    for i, on in enumerate(front):
        if values[i] is None:
            assert not on
        else:  # on the front exactly when nothing dominates it (exact duplicates dominate neither)
            assert on == (not dominated(i, costs, values))


def fake_run(path, policies, adaptive=False, num_images=3, reference=(), provenance=None, **dataset):
    """A run folder as `ardet eval` leaves it (summary.json only), with made-up numbers; ``reference``: the names of
    policies that need the ground truth (the oracle)."""
    rows = []
    for name, ap, gflops in policies:
        stats = dict(zip(STAT_NAMES, [ap, ap + 0.2, ap + 0.05, -1.0 if ap < 0.2 else ap / 2, ap, ap] + [0.5] * 6))
        stages = {"predictor": 0.1 if adaptive else 0.0, "resample": 0.5, "detector": gflops}
        stages["total"] = sum(stages.values())
        rows.append({"policy": name, "num_images": 3, "num_detections": 30, "stats": stats,
                     "per_category": [{"id": 1, "name": "a", "ap": ap}], "adaptive": adaptive,
                     "gflops": {"mean": stages, "std": {k: 0.1 for k in stages}},
                     "seconds": {"mean": {k: v / 100 for k, v in stages.items()}, "std": {k: 0.0 for k in stages}},
                     "images_per_s": 100 / stages["total"], "load_seconds_mean": 0.01,
                     "factors": [0.5, 1.0, 1.5] if adaptive else [1.0] * 3, "sizes": {"800x1066": 3},
                     "resamplers": {"bilinear": 3}, "flops_counted_images": 1, "uncounted_ops": ["add"],
                     "peak_memory_bytes": {"detector": 2 ** 30}, "reference": name in reference})
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({"dataset": {"annotations": "gt.json", "images": "img",
                                                               "num_images": num_images, **dataset},
                                                   "backend": "pycocotools", "policies": rows,
                                                   **({"provenance": provenance} if provenance else {})}))
    return path


def test_report_writes_all_artefacts(tmp_path):
    a = fake_run(tmp_path / "fixed", [("fixed-800", 0.40, 80.0), ("fixed-600", 0.30, 45.0),
                                      ("fixed-700", 0.28, 60.0)])
    b = fake_run(tmp_path / "adaptive", [("adaptive", 0.38, 50.0)], adaptive=True)
    paths = write_report([a, b], tmp_path / "out")
    md = paths["report.md"].read_text()
    lines = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "**AP**" in lines["fixed-800"] and "**AP**" in lines["fixed-600"] and "**AP**" in lines["adaptive"]
    assert "**AP**" not in lines["fixed-700"]  # dominated by fixed-600 (cheaper and better)
    assert "80.50" in lines["fixed-800"]  # total GFLOPs: predictor + resample + detector
    with Image.open(paths["pareto.png"]) as im:
        assert im.format == "PNG" and im.width > 3 * im.height / 2  # three panels side by side (adaptive present)
    rows = list(csv.DictReader(paths["results.csv"].open()))
    assert [r["label"] for r in rows] == ["fixed-800", "fixed-600", "fixed-700", "adaptive"]
    assert float(rows[3]["gflops_total"]) == pytest.approx(50.6) and rows[2]["pareto_AP"] == "False"
    results = json.loads(paths["results.json"].read_text())
    assert [p["pareto_AP"] for p in results["policies"]] == [True, True, False, True]
    assert results["policies"][3]["factors"] == [0.5, 1.0, 1.5]


def test_the_oracle_is_a_reference_off_the_fronts_and_runs_say_what_made_them(tmp_path):
    """The oracle needs the ground truth: it must not push a deployable policy off a front (here it would dominate
    fixed-600), and it is labelled as what it is. Runs of different detectors are told apart in the table."""
    provenance = {"command": "ardet eval --config c.yaml", "device": "cpu", "detector": {"spec": "models/a",
                  "sha256": "ab" * 32}, "environment": {"versions": {"torch": "2.14.1"}, "cpu": "x", "gpu": None}}
    a = fake_run(tmp_path / "a", [("fixed-800", 0.40, 80.0), ("fixed-600", 0.30, 45.0), ("oracle", 0.45, 40.0)],
                 reference=("oracle",), provenance=provenance)
    b = fake_run(tmp_path / "b", [("fixed-400", 0.2, 20.0)],
                 provenance={**provenance, "detector": {"spec": "models/b", "sha256": None}})
    rows = {r["label"]: r for r in load_rows([a, b])}
    assert rows["fixed-600"]["pareto_AP"] and rows["fixed-800"]["pareto_AP"] and not rows["oracle"]["pareto_AP"]
    paths = write_report([a, b], tmp_path / "o")
    md = paths["report.md"].read_text()
    lines = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert lines["oracle"].endswith("| reference |") and "| models/a (abababab) |" in lines["fixed-600"]
    assert "| models/b |" in lines["fixed-400"]
    assert "ardet eval --config c.yaml" in md and "torch 2.14.1" in md
    saved = json.loads(paths["results.json"].read_text())
    assert saved["runs"][0]["detector"]["spec"] == "models/a" and saved["policies"][2]["reference"] is True
    assert next(csv.DictReader(paths["results.csv"].open()))["detector"] == "models/a"


def test_report_command_and_missing_run(tmp_path, capsys):
    run = fake_run(tmp_path / "r", [("p", 0.3, 10.0)])
    assert main(["report", str(run)]) == 0
    assert (run / "report.md").exists() and (run / "pareto.png").exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "summary.json" in capsys.readouterr().err


def test_same_policy_name_in_two_runs_gets_run_labels(tmp_path):
    a = fake_run(tmp_path / "a", [("fixed-800", 0.4, 80.0)])
    b = fake_run(tmp_path / "b", [("fixed-800", 0.3, 80.0)])
    rows = list(csv.DictReader(write_report([a, b], tmp_path / "o")["results.csv"].open()))
    assert [r["label"] for r in rows] == ["a/fixed-800", "b/fixed-800"]
    # Folders with one name in different places: the labels keep the part of the path that tells them apart.
    c, d = fake_run(tmp_path / "x" / "base", [("p", 0.4, 8.0)]), fake_run(tmp_path / "y" / "base", [("p", 0.3, 8.0)])
    assert [r["label"] for r in load_rows([c, d])] == ["x/base/p", "y/base/p"]
    with pytest.raises(ValueError, match="twice"):
        load_rows([c, c])


def test_pareto_marks_compare_runs_on_the_same_images_only(tmp_path):
    full = fake_run(tmp_path / "full", [("cheap", 0.2, 10.0), ("dear", 0.3, 50.0)], num_images=100)
    subset = fake_run(tmp_path / "subset", [("easy", 0.6, 20.0)], num_images=6)  # AP on 6 easy images
    rows = {r["label"]: r for r in load_rows([full, subset])}
    assert rows["dear"]["pareto_AP"] and rows["cheap"]["pareto_AP"] and rows["easy"]["pareto_AP"]
    paths = write_report([full, subset], tmp_path / "o")
    assert "different images" in paths["report.md"].read_text() and "set 2: gt.json (6 images)" in paths[
        "report.md"].read_text()
    assert rows["easy"]["image_set"] != rows["cheap"]["image_set"] == rows["dear"]["image_set"]
    csv_rows = {r["label"]: r for r in csv.DictReader(paths["results.csv"].open())}
    assert csv_rows["easy"]["image_set"] != csv_rows["cheap"]["image_set"]  # the CSV's Pareto flags need it
    assert {"gflops_std_detector", "seconds_std_total", "peak_memory_bytes_detector"} <= csv_rows["easy"].keys()
    low = write_report([fake_run(tmp_path / "low", [("low", 0.1, 5.0)])], tmp_path / "low-report")
    saved = json.loads(low["results.json"].read_text())["policies"][0]
    assert saved["stats"]["AP_S"] is None  # pycocotools' -1 (no ground truth there), as the CSV's blank
    # Runs are compared by contents: the same file under another path is the same data, a file rewritten in place
    # (new ground truth) is not.
    same = {"image_ids_sha256": "ids"}
    a = fake_run(tmp_path / "a", [("a", 0.2, 10.0)], annotations="gt.json", annotations_sha256="v1", **same)
    b = fake_run(tmp_path / "b", [("b", 0.3, 20.0)], annotations="../x/gt.json", annotations_sha256="v1", **same)
    c = fake_run(tmp_path / "c", [("c", 0.1, 30.0)], annotations="gt.json", annotations_sha256="v2", **same)
    rows = {r["label"]: r for r in load_rows([a, b, c])}
    assert rows["a"]["pareto_AP"] and rows["b"]["pareto_AP"] and rows["c"]["pareto_AP"]
    rows = {r["label"]: r for r in load_rows([a, b, fake_run(tmp_path / "d", [("d", 0.25, 30.0)], **same,
                                                              annotations="gt.json", annotations_sha256="v1")])}
    assert not rows["d"]["pareto_AP"]  # dominated by b (same data, other path), not by a
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "summary.json").write_text('{"dataset": ')
    with pytest.raises(ValueError, match="torn/summary.json: not valid JSON"):
        load_rows([a, tmp_path / "torn"])
    for text in ("{}", "[]", "NaN", '{"dataset": {}, "policies": [{"policy": "p"}]}'):
        (tmp_path / "torn" / "summary.json").write_text(text)
        with pytest.raises(ValueError, match="torn/summary.json: not the summary of an 'ardet eval' run"):
            load_rows([a, tmp_path / "torn"])


def test_coco_eval_command_equals_pycocotools(tmp_path, capsys):
    gt_path = SHARED / "data" / "coco-mini" / "instances.json"
    if not gt_path.exists():
        pytest.skip(f"{gt_path} not present (the shared coco-mini data set)")
    gt = json.loads(gt_path.read_text())
    rng = random.Random(0)
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": rng.random(),
             "bbox": [v * rng.uniform(0.9, 1.1) for v in a["bbox"]]} for a in gt["annotations"]]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    assert main(["coco-eval", "--gt", str(gt_path), "--dets", str(tmp_path / "dets.json"),
                 "--json", str(tmp_path / "m.json")]) == 0
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        ev = COCOeval(coco, coco.loadRes(str(tmp_path / "dets.json")), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = json.loads((tmp_path / "m.json").read_text())
    assert out["stats"] == [float(s) for s in ev.stats] and len(out["stats"]) == 12
    assert "AP50" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text(json.dumps([{**dets[0], "category_id": 0}]))
    assert main(["coco-eval", "--gt", str(gt_path), "--dets", str(tmp_path / "bad.json")]) == 2
    assert "category id" in capsys.readouterr().err
    (tmp_path / "torn.json").write_text("[{")
    assert main(["coco-eval", "--gt", str(gt_path), "--dets", str(tmp_path / "torn.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
