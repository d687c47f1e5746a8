"""The shipped demo models load and reach their cards' metrics (models/cards.json) on the cards' slice, regenerated
here from the deterministic data generator: a weight file that drifted from its card fails here."""
import json
from pathlib import Path

import pytest

from ardet.images import load_image
from ardet.synthetic import make_split
from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_demo_models_reach_their_cards(tmp_path, monkeypatch):
    cards = json.loads((ROOT / "models" / "cards.json").read_text())
    make_split(tmp_path / "test", seed=0, split="test", num_images=100)  # the demo's test split, as make-data writes it
    out = tmp_path / "run"
    monkeypatch.chdir(ROOT)  # the config names the models relative to the repository root
    assert main(["eval", "--config", str(ROOT / "configs/eval/demo-cards.yaml"), "--out", str(out), "--no-progress",
                 "--set", f"dataset.annotations={tmp_path}/test/annotations.json",
                 "--set", f"dataset.images={tmp_path}/test/images"]) == 0
    summary = {p["policy"]: p for p in json.loads((out / "summary.json").read_text())["policies"]}
    for name, card in cards["eval"].items():
        # the cards round to 4 decimals; the two policies' APs are only 0.0014 apart, so the tolerance must be below
        for stat in ("AP", "AP50", "AP_S"):
            assert summary[name]["stats"][stat] == pytest.approx(card[stat], abs=6e-4), (name, stat)
        assert summary[name]["gflops"]["mean"]["total"] == pytest.approx(card["gflops_mean"], abs=6e-5), name
        factors = summary[name]["factors"]
        assert sum(factors) / len(factors) == pytest.approx(card["mean_factor"], abs=6e-5), name


def test_the_adaptive_policy_passes_its_knob_to_the_shipped_predictor(tmp_path):
    """The knob reaches the predictor (the README's sweep over knob values relies on it): each policy's size is the
    predictor's own decision at that knob, and a larger knob picks smaller inputs on average, as the demo's
    knob 0 -> 1 sweep shows (its default knob, 0.5, is not one of these, so a dropped knob would show)."""
    import torch

    from ardet.images import LoadedImage
    from detector import load_detector
    from pipeline import AdaptivePolicy
    from scale_predictor import load_predictor

    make_split(tmp_path / "test", seed=0, split="test", num_images=12)
    images = [LoadedImage(id=i, pixels=load_image(p).pixels) for i, p in
              enumerate(sorted((tmp_path / "test" / "images").glob("*.png")))]
    predictor = load_predictor(ROOT / "models/scale-predictor-demo/predictor.safetensors")
    detector = load_detector(str(ROOT / "models/detector-demo"))
    mean_factor = {}
    for knob in (0.0, 1.0):
        policy = AdaptivePolicy(detector, predictor, "bilinear", knob=knob)
        decided = [policy.decide(im) for im in images]
        expected = predictor.predict([im.pixels for im in images], [im.size for im in images], knob=knob)
        assert [size for size, _ in decided] == [d.size for d in expected]
        mean_factor[knob] = float(torch.tensor([factor for _, factor in decided]).mean())
    assert mean_factor[0.0] > mean_factor[1.0]
