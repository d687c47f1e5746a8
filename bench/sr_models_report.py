"""The tables and the plot of docs/sr-models.md, from the committed measurement files:

    docs/data/sr-models/<model>-<Set5|Set14>.json   `ardet sr-eval --json` of each model (CPU)
    docs/data/sr-models/h200/<model>-<set>.json      the same with `--device cuda` on an H200
    docs/data/sr-models/ablation/<run>.json          `ardet sr-eval --json` of each ablation run (Set5)
    docs/data/sr-detection/results.json              `ardet sweep --config configs/sweep/sr-detection.yaml`

    .venv/bin/python bench/sr_models_report.py --plot docs/sr-models.png     (prints the markdown tables)
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

OFFICIAL = "liif-edsr-baseline"
# What each ablation run changes with respect to the CPU recipe of liif-nano (the commands are in docs/sr-models.md).
ABLATIONS = {
    "liif-nano-cpu-recipe": "none: distillation + L1 to HR, lr_skip, encoder 3x24, MLP 16x2",
    "no-teacher": "train.teacher_weight=0: L1 to HR only, the same renders",
    "no-teacher-seed1": "as no-teacher with train.seed=1 (other renders, initialisation and samples)",
    "no-teacher-seed2": "as no-teacher with train.seed=2",
    "no-lr-skip": "model.args lr_skip=false: the MLP predicts colours, not a residual over bilinear",
    "decoder-heavy": "compute moved to the per-query MLP: encoder 1x16, MLP 42x2 (about the same MACs at x2)",
    "distilled-seed1": "as liif-nano-cpu-recipe with train.seed=1 (other renders, initialisation and samples)",
    "distilled-seed2": "as liif-nano-cpu-recipe with train.seed=2",
    "decoder-heavy-seed1": "as decoder-heavy with train.seed=1",
    "decoder-heavy-seed2": "as decoder-heavy with train.seed=2",
}
# Runs that differ only in train.seed: each recipe's mean and range over its seeds.
SEED_GROUPS = {
    "distilled (teacher + HR)": ["liif-nano-cpu-recipe", "distilled-seed1", "distilled-seed2"],
    "no-teacher (HR only)": ["no-teacher", "no-teacher-seed1", "no-teacher-seed2"],
    "decoder-heavy (distilled)": ["decoder-heavy", "decoder-heavy-seed1", "decoder-heavy-seed2"],
}


def read_rows(path: Path) -> dict[int, dict]:
    """scale -> row of one ``ardet sr-eval --json`` file."""
    return {r["scale"]: r for r in json.loads(path.read_text())["rows"]}


def sr_reports(folder: Path, data: str) -> dict[str, dict[int, dict]]:
    """model -> scale -> sr-eval row, for every ``<model>-{data}.json`` in ``folder``."""
    reports = {path.name.removesuffix(f"-{data}.json"): read_rows(path)
               for path in sorted(folder.glob(f"*-{data}.json"))}
    if not reports:
        raise FileNotFoundError(f"{folder}: no *-{data}.json from `ardet sr-eval --json`")
    return reports


def quality_cost_table(reports: dict[str, dict[int, dict]]) -> str:
    header = ("| scale | method | Y-PSNR (dB) | gain over bicubic | MACs / output px | official / model MACs | "
              "CPU ms / output Mpx, fp32 | bf16 |")
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    scales = sorted(next(iter(reports.values())))
    for s in scales:
        rows = sorted(((m, r[s]) for m, r in reports.items()), key=lambda mr: mr[1]["liif_macs_per_px"])
        b = rows[0][1]
        lines.append(f"| x{s} | bicubic | {b['bicubic_y']:.2f} | | {b['bicubic_macs_per_px']:,.0f} | | "
                     f"{b['bicubic_ms_per_mpx']:,.0f} | |")
        official = reports.get(OFFICIAL, {}).get(s)
        for model, r in rows:
            ratio = f"{official['liif_macs_per_px'] / r['liif_macs_per_px']:.1f}x" if official else ""
            bf16 = f"{r['liif_bf16_ms_per_mpx']:,.0f}" if "liif_bf16_ms_per_mpx" in r else ""
            lines.append(f"| x{s} | {model} | {r['liif_y']:.2f} | {r['liif_y'] - r['bicubic_y']:+.2f} | "
                         f"{r['liif_macs_per_px']:,.0f} | {ratio} | {r['liif_ms_per_mpx']:,.0f} | {bf16} |")
    return "\n".join(lines)


def ablation_table(runs: dict[str, dict[int, dict]]) -> str:
    """The ``runs`` (name -> sr-eval rows) against the first of ABLATIONS, their common base."""
    base_name = next(iter(ABLATIONS))
    base = runs[base_name]
    lines = [f"| run | change | MACs / output px, x2 | Set5 x2 | x3 | x4 | x2 vs {base_name} |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, change in ABLATIONS.items():
        if name not in runs:
            continue
        r = runs[name]
        delta = f"{r[2]['liif_y'] - base[2]['liif_y']:+.2f}" if name != base_name else ""
        lines.append(f"| {name} | {change} | {r[2]['liif_macs_per_px']:,.0f} | "
                     + " | ".join(f"{r[s]['liif_y']:.2f}" for s in (2, 3, 4)) + f" | {delta} |")
    return "\n".join(lines)


def seed_table(runs: dict[str, dict[int, dict]]) -> str:
    """Mean (min - max) Set5 Y-PSNR of each of SEED_GROUPS whose runs are all in ``runs``."""
    lines = ["| recipe | seeds | Set5 x2 | x3 | x4 |", "| --- | --- | --- | --- | --- |"]
    for group, names in SEED_GROUPS.items():
        if all(n in runs for n in names):
            cells = []
            for scale in (2, 3, 4):
                values = [runs[n][scale]["liif_y"] for n in names]
                cells.append(f"{sum(values) / len(values):.2f} ({min(values):.2f} - {max(values):.2f})")
            lines.append(f"| {group} | {len(names)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def device_table(gpu: dict[str, dict[int, dict]], cpu: dict[str, dict[int, dict]]) -> str:
    """GPU wall time per output megapixel (fp32, bf16) beside the CPU's fp32 time of the same model and scale."""
    lines = ["| scale | model | GPU ms / output Mpx, fp32 | bf16 | CPU (1 thread) ms / output Mpx, fp32 | CPU / GPU |",
             "| --- | --- | --- | --- | --- | --- |"]
    for s in sorted(next(iter(gpu.values()))):
        for model, r in sorted(gpu.items(), key=lambda mr: mr[1][s]["liif_macs_per_px"]):
            c = cpu[model][s]["liif_ms_per_mpx"]
            lines.append(f"| x{s} | {model} | {r[s]['liif_ms_per_mpx']:,.0f} | {r[s]['liif_bf16_ms_per_mpx']:,.0f} | "
                         f"{c:,.0f} | {c / r[s]['liif_ms_per_mpx']:.0f}x |")
    return "\n".join(lines)


def detection_tables(results: Path, sizes=(256, 288)) -> str:
    """Identical input sizes (the ``fixed-<size>-...`` policies of configs/sweep/sr-detection.yaml), then the adaptive
    policies, with how many images each rendered by SR and whether it is on the run's AP-vs-GFLOPs front (the
    report's ``pareto_AP``: of identical points only the first counts)."""
    policies = json.loads(results.read_text())["policies"]
    by_name = {p["policy"]: p for p in policies}
    lines = ["| size | resampler | AP | AP_S | AP vs bilinear (points) | GFLOPs / image: resample | total |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for size in sizes:
        base = _stat(by_name[f"fixed-{size}-bilinear-max512"], "AP")
        rows = [p for p in policies if p["policy"].startswith(f"fixed-{size}-")]
        for p in sorted(rows, key=lambda p: p["gflops"]["mean"]["total"]):
            resampler = p["policy"][len(f"fixed-{size}-"):].removesuffix("-max512")
            g = p["gflops"]["mean"]
            gain = "-" if None in (base, _stat(p, "AP")) else f"{100 * (_stat(p, 'AP') - base):+.2f}"
            lines.append(f"| {size} | {resampler} | {_ap(p, 'AP')} | {_ap(p, 'AP_S')} | {gain} | "
                         f"{g['resample']:.3f} | {g['total']:.3f} |")
    lines += ["", "| policy | images rendered by SR | AP | AP_S | GFLOPs / image | on the front |",
              "| --- | --- | --- | --- | --- | --- |"]
    for p in sorted((p for p in policies if p["adaptive"] and p["policy"].startswith("adaptive")),
                    key=lambda p: p["gflops"]["mean"]["total"]):
        lines.append(f"| {p['policy']} | {p['resamplers'].get('liif', 0)} / {p['num_images']} | "
                     f"{_ap(p, 'AP')} | {_ap(p, 'AP_S')} | {p['gflops']['mean']['total']:.3f} | "
                     f"{'yes' if p['pareto_AP'] else ''} |")
    return "\n".join(lines)


def _stat(policy: dict, stat: str) -> float | None:
    value = policy["stats"][stat]
    return None if value is None or value < 0 else value  # null / -1: no ground truth in that range


def _ap(policy: dict, stat: str) -> str:
    return "-" if _stat(policy, stat) is None else f"{_stat(policy, stat):.4f}"


def plot(reports: dict[str, dict[int, dict]], data: str, scale: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    any_row = next(iter(reports.values()))[scale]
    points = [("bicubic", any_row["bicubic_macs_per_px"], 0.0)] + [
        (m, r[scale]["liif_macs_per_px"], r[scale]["liif_y"] - r[scale]["bicubic_y"]) for m, r in reports.items()]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, macs, gain in points:
        # labels go right of their point unless another point sits within a decade to the right at a similar gain
        crowded = any(0 < math.log10(m / macs) < 1 and abs(g - gain) < 0.3 for _, m, g in points)
        ax.scatter(macs, gain, s=40)
        ax.annotate(f"{label} {gain:+.2f} dB", (macs, gain), textcoords="offset points", fontsize=7, va="center",
                    xytext=(-6, 0) if crowded else (6, 0), ha="right" if crowded else "left")
    ax.set_xscale("log")
    ax.set_xlim(10, 1e8)  # room for the labels right of the points
    ax.set_ylim(-0.5, max(gain for *_, gain in points) + 0.8)
    ax.set_xlabel("MACs per output pixel (fast path, 128x128 LR input)")
    ax.set_ylabel(f"Y-PSNR gain over bicubic (dB), {data} x{scale}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="docs/data/sr-models", help="folder of <model>-<data>.json")
    parser.add_argument("--detection", default="docs/data/sr-detection/results.json")
    parser.add_argument("--plot", help="write the Set5 x2 PSNR-gain vs MACs plot here")
    args = parser.parse_args()
    folder = Path(args.results)
    for data in ("Set5", "Set14"):
        print(f"{data}\n\n{quality_cost_table(sr_reports(folder, data))}\n")
    if (folder / "h200").is_dir():
        for data in ("Set5", "Set14"):
            print(f"{data}, H200\n\n{device_table(sr_reports(folder / 'h200', data), sr_reports(folder, data))}\n")
    if (folder / "ablation").is_dir():
        runs = {p.stem: read_rows(p) for p in sorted((folder / "ablation").glob("*.json"))}
        print(f"Ablation (Set5 Y-PSNR, dB)\n\n{ablation_table(runs)}\n")
        print(f"Ablation over seeds: mean (min - max)\n\n{seed_table(runs)}\n")
    if Path(args.detection).is_file():
        print(f"Detection (demo test split)\n\n{detection_tables(Path(args.detection))}\n")
    if args.plot:
        plot(sr_reports(folder, "Set5"), "Set5", 2, Path(args.plot))


if __name__ == "__main__":
    main()
