"""The shipped demo models load and reach their cards' metrics (models/cards.json) on the cards' slice, regenerated
here from the deterministic data generator: a weight file that drifted from its card fails here."""
import json
from pathlib import Path

import pytest

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
        assert summary[name]["stats"]["AP"] == pytest.approx(card["AP"], abs=0.005), name
        assert summary[name]["stats"]["AP50"] == pytest.approx(card["AP50"], abs=0.01), name
        factors = summary[name]["factors"]
        assert sum(factors) / len(factors) == pytest.approx(card["mean_factor"], abs=0.02), name
