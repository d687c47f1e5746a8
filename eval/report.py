"""Accuracy against compute across runs: report.md, pareto.png, results.json and results.csv.

Reads the ``summary.json`` that :func:`eval.run_evaluation` leaves in each run folder; computes nothing that the run
did not measure (costs are the measured means, never formulas).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from ardet.coco import STAT_NAMES
from ardet.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from eval.cost import STAGES

TABLE_STATS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")
FRONT_STATS = ("AP", "AP_S")  # the report marks a Pareto front for each


def pareto_front(costs: list[float], values: list[float | None]) -> list[bool]:
    """Which points no other point beats: another with cost <= and value >= (one strictly) dominates.

    ``None`` values (a metric pycocotools could not compute, e.g. AP_S without small objects) are never on the front.
    """
    order = sorted((i for i, v in enumerate(values) if v is not None), key=lambda i: (costs[i], -values[i]))
    on_front, best, best_cost = [False] * len(values), -math.inf, None
    for i in order:
        if values[i] > best or (values[i], costs[i]) == (best, best_cost):  # an exact tie dominates neither
            on_front[i], best, best_cost = True, values[i], costs[i]
    return on_front


def load_rows(run_dirs: list[str | os.PathLike]) -> list[dict]:
    """One row per (run, policy): the policy's summary plus its run folder and a unique label. Pareto marks compare
    rows evaluated on the same images only (a run on a subset is not on the same scale)."""
    resolved = [Path(d).resolve() for d in run_dirs]
    if len(set(resolved)) < len(resolved):
        raise ValueError(f"a run folder is given twice: {[str(d) for d in run_dirs]}")
    common = Path(os.path.commonpath(resolved)) if len(resolved) > 1 else resolved[0].parent
    rows = []
    for run_dir, where in zip(run_dirs, resolved):
        summary = _read_summary(run_dir)
        provenance = summary.get("provenance", {})  # absent in runs before it was recorded
        detector = provenance.get("detector") or {}
        for policy in summary["policies"]:
            stats = {k: None if v is None or v < 0 else v for k, v in policy["stats"].items()}  # -1: no GT there
            rows.append({**policy, "stats": stats, "run": str(run_dir), "dataset": summary["dataset"],
                         "backend": summary["backend"], "reference": policy.get("reference", False),
                         "detector": detector.get("spec"), "detector_sha256": detector.get("sha256"),
                         "device": provenance.get("device"), "config": provenance.get("policies", {}).get(
                             policy["policy"]), "run_label": where.relative_to(common).as_posix() or where.name})
    if not rows:
        raise ValueError("no policies in the given runs")
    names = [r["policy"] for r in rows]
    for r in rows:
        run_label = r.pop("run_label")
        r["label"] = r["policy"] if names.count(r["policy"]) == 1 else f"{run_label}/{r['policy']}"
    for image_set, group in enumerate(_same_images(rows), 1):
        for r in group:
            r["image_set"] = image_set  # Pareto marks compare rows of one set only
        for stat in FRONT_STATS:  # of deployable policies: a reference (the oracle) needs the ground truth
            marks = pareto_front([r["gflops"]["mean"]["total"] for r in group],
                                 [None if r["reference"] else _metric(r, stat) for r in group])
            for r, mark in zip(group, marks):
                r[f"pareto_{stat}"] = mark
    return rows


def _read_summary(run_dir: str | os.PathLike) -> dict:
    """A run folder's summary.json, checked to be one that ``ardet eval`` writes."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a finished 'ardet eval' run folder?")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); re-run 'ardet eval --resume' on {run_dir}") from None
    policies = summary.get("policies") if isinstance(summary, dict) else None
    if not (isinstance(policies, list) and isinstance(summary.get("dataset"), dict) and all(
            isinstance(p, dict) and isinstance(p.get("stats"), dict) and isinstance(p.get("gflops"), dict)
            for p in policies)):
        raise ValueError(f"{path}: not the summary of an 'ardet eval' run (needs dataset and policies with stats "
                         f"and gflops); re-run 'ardet eval --resume' on {run_dir}")
    return summary


def _same_images(rows: list[dict]) -> list[list[dict]]:
    """Rows grouped by what they were evaluated on: the annotation file's contents and the set of image ids (older
    summaries: the file's path, the ids in order or their count)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        d = r["dataset"]
        ground_truth = d.get("annotations_sha256", d["annotations"])
        groups.setdefault((ground_truth, d.get("image_ids_sha256", d["num_images"])), []).append(r)
    return list(groups.values())


def write_report(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write report.md, pareto.png, results.json and results.csv into ``out_dir``; return their paths."""
    rows = load_rows(run_dirs)
    out = Path(out_dir)
    paths = {name: out / name for name in ("report.md", "pareto.png", "results.json", "results.csv")}
    runs = _runs(run_dirs)
    atomic_write_text(paths["report.md"], _markdown(rows, runs))
    atomic_write_bytes(paths["pareto.png"], _figure(rows))
    atomic_write_json(paths["results.json"], {"runs": runs, "policies": rows})
    atomic_write_text(paths["results.csv"], _csv(rows))
    return paths


def _runs(run_dirs: list[str | os.PathLike]) -> list[dict]:
    """Each run folder with the provenance its summary.json recorded (detector, device, command, versions)."""
    return [{"run": str(d), **_read_summary(d).get("provenance", {})} for d in run_dirs]


def _detector_label(row: dict) -> str:
    sha = row.get("detector_sha256")
    return "-" if row.get("detector") is None else f"{row['detector']}" + (f" ({sha[:8]})" if sha else "")


def _metric(row: dict, stat: str) -> float | None:
    return row["stats"][stat]  # None where pycocotools says -1: no ground truth in that range


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _markdown(rows: list[dict], runs: list[dict]) -> str:
    sets: dict[int, dict] = {}
    for r in rows:
        sets.setdefault(r["image_set"], r["dataset"])
    datasets = [("set %d: " % k if len(sets) > 1 else "") + f"{d['annotations']} ({d['num_images']} images)"
                for k, d in sets.items()]
    if len(sets) > 1:
        datasets.append("the runs cover different images or ground truth (the set column), so Pareto marks compare "
                        "policies within each set only")
    detectors = len({_detector_label(r) for r in rows}) > 1
    head = ["policy", *(["set"] if len(sets) > 1 else []), *(["detector"] if detectors else []), *TABLE_STATS,
            "GFLOPs/img", *(f"{s} GFLOPs" for s in STAGES), "img/s", "Pareto"]
    lines = ["# ardet evaluation report", "",
             f"Dataset: {'; '.join(datasets)}. COCOeval backend: {', '.join(sorted({r['backend'] for r in rows}))}.",
             "", "## Accuracy against compute", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        g = r["gflops"]["mean"]
        front = "reference" if r["reference"] else " ".join(f"**{s}**" for s in FRONT_STATS if r[f"pareto_{s}"])
        lines.append("| " + " | ".join([
            r["label"], *([str(r["image_set"])] if len(sets) > 1 else []),
            *([_detector_label(r)] if detectors else []), *(_fmt(_metric(r, s)) for s in TABLE_STATS),
            f"{g['total']:.2f}",
            *(f"{g.get(s, 0.0):.2f}" for s in STAGES), _fmt(r["images_per_s"], ".2f"), front]) + " |")
    lines += ["", "AP columns are COCOeval bbox stats (pycocotools' definitions; `-` where there is no ground truth "
              "in that size range). GFLOPs are per image (2 FLOPs per multiply-add; MACs are half), measured with "
              "torch's FlopCounterMode on the tensors each stage received (interpolation, which it counts as 0, by "
              "its taps: ardet/flops.py), mean over images. img/s is 1 / the mean "
              "of the summed stage wall times (model calls only, warm, no image decoding). Pareto marks the "
              "policies that no other policy beats on both GFLOPs and that metric; a reference (the oracle, which "
              "picks each image's size by its ground truth, charged only for the size it keeps) is not deployable, "
              "so it is never on a front and is drawn hollow. Peak memory: "
              "`torch.cuda.max_memory_allocated` on CUDA, the process's peak resident set size during the call on CPU "
              "(Linux; elsewhere since the process started); both include the resident model weights.", "",
              "## Runs", ""]
    for run in runs:
        env, det = run.get("environment", {}), run.get("detector", {})
        versions = env.get("versions", {})
        lines.append(f"- `{run['run']}`: " + ("no provenance recorded (an older run)" if not env else
                     f"detector `{det.get('spec')}` (sha256 {(det.get('sha256') or 'unknown')[:12]}), device "
                     f"{run.get('device')} ({env.get('gpu') or env.get('cpu')}, {env.get('torch_threads')} CPU "
                     f"thread(s)), "
                     f"torch {versions.get('torch')}, transformers {versions.get('transformers')}, ardet "
                     f"{versions.get('ardet')}, finished {run.get('finished')}; command `{run.get('command')}`"))
    lines.append("")
    for r in rows:
        lines += [f"## {r['label']}", "", f"Run `{r['run']}`, {r['num_images']} images, "
                  f"{r['num_detections']} detections.", "",
                  "| stage | GFLOPs mean | GFLOPs std | GMACs mean | ms mean | ms std | peak memory MiB |",
                  "|---|---|---|---|---|---|---|"]
        g, t = r["gflops"], r["seconds"]
        for s in [*g["mean"]]:
            mem = r["peak_memory_bytes"].get(s)
            lines.append(f"| {s} | {g['mean'][s]:.3f} | {g['std'][s]:.3f} | {g['mean'][s] / 2:.3f} | "
                         f"{1e3 * t['mean'][s]:.1f} | {1e3 * t['std'][s]:.1f} | "
                         f"{'-' if mem is None else f'{mem / 2**20:.0f}'} |")
        factors = r["factors"]
        lines += ["", f"Scale factor: mean {sum(factors) / len(factors):.3f}, range {min(factors):.3f} to "
                  f"{max(factors):.3f}. Input sizes: "
                  + ", ".join(f"{k} ({v})" for k, v in list(r["sizes"].items())[:6])
                  + (" ..." if len(r["sizes"]) > 6 else "") + ". Resamplers: "
                  + ", ".join(f"{k} ({v})" for k, v in r["resamplers"].items()) + ".",
                  f"FLOPs counted on {r['flops_counted_images']} images, reused by input shape on the others. "
                  "Ops that ran without a FLOP formula (not in the totals): "
                  + (", ".join(f"`{op}`" for op in r["uncounted_ops"]) or "none") + ".", ""]
    return "\n".join(lines)


def _csv(rows: list[dict]) -> str:
    stages = list(dict.fromkeys(s for r in rows for s in r["gflops"]["mean"]))
    fields = ["label", "run", "policy", "image_set", "detector", "detector_sha256", "device", "num_images",
              "num_detections", "backend", "adaptive", "reference",
              *STAT_NAMES, *(f"gflops_{s}" for s in stages), *(f"gflops_std_{s}" for s in stages),
              *(f"seconds_{s}" for s in stages), *(f"seconds_std_{s}" for s in stages),
              *(f"peak_memory_bytes_{s}" for s in stages if s != "total"), "images_per_s", "factor_mean",
              "factor_min", "factor_max", *(f"pareto_{s}" for s in FRONT_STATS)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({
            "label": r["label"], "run": r["run"], "policy": r["policy"], "image_set": r["image_set"],
            "detector": r["detector"], "detector_sha256": r["detector_sha256"], "device": r["device"],
            "num_images": r["num_images"], "num_detections": r["num_detections"], "backend": r["backend"],
            "adaptive": r.get("adaptive", False), "reference": r["reference"],
            **{s: _metric(r, s) for s in STAT_NAMES},  # empty: no GT there
            **{f"gflops_{s}": r["gflops"]["mean"].get(s, 0.0) for s in stages},
            **{f"gflops_std_{s}": r["gflops"]["std"].get(s, 0.0) for s in stages},
            **{f"seconds_{s}": r["seconds"]["mean"].get(s, 0.0) for s in stages},
            **{f"seconds_std_{s}": r["seconds"]["std"].get(s, 0.0) for s in stages},
            **{f"peak_memory_bytes_{s}": r["peak_memory_bytes"].get(s) for s in stages if s != "total"},
            "images_per_s": r["images_per_s"], "factor_mean": sum(r["factors"]) / len(r["factors"]),
            "factor_min": min(r["factors"]), "factor_max": max(r["factors"]),
            **{f"pareto_{s}": r[f"pareto_{s}"] for s in FRONT_STATS}})
    return buf.getvalue()


def _figure(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker as ticker
    import numpy as np

    adaptive = [r for r in rows if r.get("adaptive")]
    panels = len(FRONT_STATS) + bool(adaptive)
    sets = sorted({r["image_set"] for r in rows})
    legend_rows = math.ceil((len(rows) + len(sets)) / 4)  # one entry per row and per front
    height = 4.6 + 0.22 * legend_rows  # the legend gets its own space below the panels, however long
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, height), squeeze=False)
    axes = axes[0]
    axes[1].sharex(axes[0])  # the same compute axis for both fronts
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vP*Xh<>"
    style = {r["label"]: (colors[i % len(colors)], markers[i % len(markers)]) for i, r in enumerate(rows)}
    legend = {r["label"]: r["label"] + (f" [set {r['image_set']}]" if len(sets) > 1 else "")
              + (" (reference)" if r["reference"] else "") for r in rows}
    costs = [r["gflops"]["mean"]["total"] for r in rows]
    for ax, stat in zip(axes, FRONT_STATS):
        for r, cost in zip(rows, costs):
            value = _metric(r, stat)
            if value is not None:
                color, marker = style[r["label"]]
                ax.scatter(cost, value, s=70, marker=marker, label=legend[r["label"]], zorder=3,
                           facecolors="none" if r["reference"] else color,  # not deployable: hollow
                           edgecolors=color if r["reference"] else "black" if r[f"pareto_{stat}"] else "none",
                           linewidths=1.2)
        for k, linestyle in zip(sets, ["--", ":", "-.", (0, (5, 1, 1, 1))] * len(sets)):  # one front per image set
            front = sorted((c, _metric(r, stat)) for r, c in zip(rows, costs)
                           if r[f"pareto_{stat}"] and r["image_set"] == k)
            if front:
                ax.step(*zip(*front), where="post", color="0.35", linestyle=linestyle, linewidth=1.2, zorder=2,
                        label="Pareto front" + (f", image set {k}" if len(sets) > 1 else ""))
        if all(_metric(r, stat) is None for r in rows):
            ax.text(0.5, 0.5, f"no {stat} (no ground truth in that range)", transform=ax.transAxes, ha="center")
        if costs and max(costs) > 10 * max(min(costs), 1e-9):
            ax.set_xscale("log")  # labelled at 1, 2, 5 x 10^k, plain numbers: the default crowds minor labels
            ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        shown = [v for v in (_metric(r, stat) for r in rows) if v is not None]
        if shown:  # AP lives in [0, 1]: never show negative ticks, keep a little headroom
            top = max(shown) or 0.05
            ax.set_ylim(-0.02 * top, 1.15 * top)
        ax.set_xlabel("mean compute per image (GFLOPs, all stages)")
        ax.set_ylabel(f"COCO {stat} (IoU .50:.95)")
        ax.set_title(f"{stat} vs compute")
        ax.grid(True, alpha=0.3)
    if adaptive:
        ax = axes[-1]
        factors = [f for r in adaptive for f in r["factors"]]
        bins = np.linspace(min(factors), max(factors), 21) if max(factors) > min(factors) else 20  # shared bins
        for r in adaptive:
            ax.hist(r["factors"], bins=bins, histtype="step", linewidth=1.6, color=style[r["label"]][0],
                    label=legend[r["label"]])
        ax.set_xlabel("scale factor (input size / original size)")
        ax.set_ylabel("images")
        ax.set_title("Chosen scale factors (adaptive policies)")
        if len(adaptive) <= 8:  # colours repeat across the shared legend's rows; more would cover the panel
            ax.legend(fontsize=7, frameon=False)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=max(1, min(len(unique), 4)), frameon=False,
               fontsize=9, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, (0.22 * legend_rows + 0.15) / height, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
