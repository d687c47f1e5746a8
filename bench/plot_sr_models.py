"""docs/sr-models.png: Y-PSNR gain over bicubic vs MACs per output pixel, one point per model (and bicubic at 0 dB),
from the ``ardet sr-eval --json`` files of docs/sr-models.md.

    .venv/bin/python bench/plot_sr_models.py --data Set5 --scale 2 --out docs/sr-models.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def points(folder: Path, data: str, scale: int) -> list[tuple[str, float, float]]:
    """(label, MACs per output pixel, Y-PSNR gain over bicubic in dB), bicubic first."""
    rows = {}
    for path in sorted(folder.glob(f"*-{data}.json")):
        report = json.loads(path.read_text())
        rows[report["model"]] = next(r for r in report["rows"] if r["scale"] == scale)
    if not rows:
        raise FileNotFoundError(f"{folder}: no *-{data}.json from `ardet sr-eval --json`")
    any_row = next(iter(rows.values()))
    return [("bicubic", any_row["bicubic_macs_per_px"], 0.0)] + [
        (model, r["liif_macs_per_px"], r["liif_y"] - r["bicubic_y"]) for model, r in rows.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="docs/data/sr-models", help="folder of <model>-<data>.json")
    parser.add_argument("--data", default="Set5")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--out", default="docs/sr-models.png")
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(6, 4))
    found = points(Path(args.results), args.data, args.scale)
    for label, macs, gain in found:
        ax.scatter(macs, gain, s=40)
        ax.annotate(f"{label}\n{gain:+.2f} dB, {macs:,.0f} MAC/px", (macs, gain), textcoords="offset points",
                    xytext=(6, -4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(10, 1e8)  # room for the labels right of the points
    ax.set_ylim(-0.5, max(gain for *_, gain in found) + 0.8)
    ax.set_xlabel("MACs per output pixel (fast path, 128x128 LR input)")
    ax.set_ylabel(f"Y-PSNR gain over bicubic (dB), {args.data} x{args.scale}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)


if __name__ == "__main__":
    main()
