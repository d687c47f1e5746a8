"""Published numbers, reproduced: the official EDSR-baseline-LIIF on Set5 (pulled by `make test`) and the shipped
small models against their model cards in docs/sr.md and docs/sr-models.md."""
import re
from pathlib import Path

import pytest
import torch

import sr
from ardet.weights import weights_path
from conftest import official_weights_missing
from sr.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def set5(shared_dir) -> Path:
    return shared_dir / "data" / "sr" / "Set5"


def test_official_edsr_baseline_liif_reproduces_set5(set5):
    try:
        weights_path("liif-edsr-baseline")
    except FileNotFoundError as e:
        official_weights_missing(f"official weights cannot be loaded: {e}")
    model = sr.load_model("liif-edsr-baseline")
    rows = {r["scale"]: r for r in evaluate(model, set5, (2, 3, 4), cost_lr_size=(8, 8))}  # MACs: not checked here
    # liif-reference.md: the reference code with the official weights (LIIF) and its bicubic control, Y-PSNR.
    for scale, liif, bicubic in ((2, 38.00, 33.67), (3, 34.42, 30.40), (4, 32.26, 28.43)):
        assert rows[scale]["liif_y"] == pytest.approx(liif, abs=0.05)
        assert rows[scale]["bicubic_y"] == pytest.approx(bicubic, abs=0.05)


def test_official_weights_fast_path_equals_plain_at_border_sensitive_scales():
    try:
        model = sr.load_model("liif-edsr-baseline")
    except FileNotFoundError as e:
        official_weights_missing(f"official weights cannot be loaded: {e}")
    x = torch.rand(1, 3, 12, 14, generator=torch.Generator().manual_seed(0))
    for size in [(12, 14), (36, 42), (29, 47)]:  # x1 and x3 put queries exactly on LR centres; non-integer
        assert (model.upscale(x, size, tile=5) - model.upscale_plain(x, size)).abs().max() <= 1e-5


CARDS = [("liif-small", "sr.md"), ("liif-nano", "sr-models.md"), ("liif-micro", "sr-models.md"),
         ("liif-mini", "sr-models.md")]


def card_psnr(model: str, doc: str) -> dict[int, float]:
    """A shipped model's Set5 Y-PSNR from its model card table: rows '| xS | <model> | ...'."""
    text = (ROOT / "docs" / doc).read_text().split(f"## Model card: `{model}`")[1].split("\n## ")[0]
    rows = re.findall(r"^\| x(\d) \| ([\d.]+) \|", text, re.MULTILINE)
    assert rows, f"docs/{doc} has no Set5 table rows in the card of {model}"
    return {int(s): float(v) for s, v in rows}


@pytest.mark.parametrize("model, doc", CARDS)
def test_shipped_model_matches_its_card_and_beats_bicubic(set5, model, doc):
    card = card_psnr(model, doc)
    rows = {r["scale"]: r for r in evaluate(sr.load_model(model), set5, sorted(card))}
    for scale, psnr in card.items():
        assert rows[scale]["liif_y"] == pytest.approx(psnr, abs=0.05)
        assert rows[scale]["liif_y"] > rows[scale]["bicubic_y"] + 0.5
