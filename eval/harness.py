"""The evaluation run: every policy on every selected image, one JSONL record per (policy, image), then COCOeval.

Layout of a run folder::

    config.yaml              the resolved config (written by the command)
    dataset.json             the ground truth it scores against: the annotation file and its sha256
    weights.json             the identity of each model's weights, when the caller gives them (resume checks both)
    records/rank{R}.jsonl    appended and fsynced per record while running; one file per rank
    records.jsonl            all records merged in dataset order (atomic, at the end)
    detections/{policy}.json the policy's COCO results file
    summary.json             per policy: the 12 stats, per-category AP, FLOPs/time/memory per stage, factors;
                             the run's provenance (what the caller passes, e.g. the detector and command, plus the
                             versions, processor and GPU of the process that finished it)

Resuming skips the (policy, image) pairs that any rank file already holds; the merge orders records by the dataset's
image order, so a resumed run gives the same detections file, hence the same metrics, as an uninterrupted one.
Under ``torchrun`` each rank takes ``image_ids[rank::world]`` (an exact partition, no padding), and rank 0 merges
and evaluates after a barrier.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import re
import statistics
import time
from collections import Counter
from pathlib import Path

from ardet.coco import STAT_NAMES, evaluate_bbox
from ardet.device import environment
from ardet.files import JsonlWriter, atomic_write_json, atomic_write_text, read_jsonl
from eval.coco import CocoDataset
from eval.cost import STAGES
from eval.policy import POLICY_TRAITS, ImageResult, Policy

log = logging.getLogger(__name__)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


def image_record(policy: str, image_id: int, original_size: tuple[int, int], result: ImageResult,
                 load_seconds: float, call_seconds: float) -> dict:
    """The JSONL record of one image through one policy (everything the report and COCOeval need)."""
    detections = result.detections.to_coco(image_id)
    if not all(math.isfinite(v) for d in detections for v in (*d["bbox"], d["score"])):
        raise ValueError(f"policy {policy!r} produced a non-finite box or score for image {image_id}")
    return {
        "policy": policy, "image_id": image_id, "original_size": list(original_size), "size": list(result.size),
        "factor": float(result.factor), "resampler": result.resampler,
        "flops": {k: int(v) for k, v in result.flops.items()},
        "seconds": {k: float(v) for k, v in result.seconds.items()},
        "flops_source": dict(result.flops_source), "peak_memory_bytes": dict(result.peak_memory_bytes),
        "uncounted_ops": list(result.uncounted_ops), "load_seconds": load_seconds, "call_seconds": call_seconds,
        "extra": result.extra, "detections": detections,
    }


def run_evaluation(policies: list[Policy], dataset: CocoDataset, out_dir: str | Path, *, resume: bool = False,
                   backend: str = "pycocotools", progress: bool = True, provenance: dict | None = None,
                   weights: dict[str, str] | None = None) -> dict | None:
    """Run (or resume) every policy on this rank's share of ``dataset``; on rank 0 merge, evaluate, and return the
    summary (other ranks return None). ``provenance``: JSON-able facts the summary keeps about the run (the
    command line records its detector, device, config and command). ``weights``: an identity per model the
    policies use (e.g. :func:`ardet.files.module_sha256`); a resume with other weights is refused."""
    import torch.distributed as dist
    from tqdm import tqdm

    names = [p.name for p in policies]
    bad = [n for n in names if not _SAFE_NAME.match(n)]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"policy names must be unique and file-name safe ([A-Za-z0-9._=+-]): {names}")
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    out = Path(out_dir)
    records_dir = out / "records"
    if not resume:
        check_fresh(out)
    # Only the annotations' contents count: another image selection from the same file may resume (extending a
    # --limit run), and the file may have moved.
    _check_unchanged(out / "dataset.json", dataset.fingerprint, ["annotations_sha256"], resume, rank == 0,
                     "ground truth")
    if weights is not None:
        _check_unchanged(out / "weights.json", weights, None, resume, rank == 0, "model weights")
    done = {(r["policy"], r["image_id"]) for r in _read_records(records_dir)}
    if distributed:
        dist.barrier()  # every rank has checked and read the folder before any rank writes to it
    todo = [i for i in dataset.image_ids[rank::world] if any((n, i) not in done for n in names)]
    log.info("rank %d/%d: %d images to run (%d pairs already done)", rank, world, len(todo), len(done))
    with JsonlWriter(records_dir / f"rank{rank}.jsonl") as writer:
        for image_id in tqdm(todo, desc="eval", unit="img", disable=not progress or rank != 0):
            start = time.perf_counter()
            image = dataset.load(image_id)
            load_seconds = time.perf_counter() - start
            for policy in policies:
                if (policy.name, image_id) in done:
                    continue
                start = time.perf_counter()
                result = policy(image)
                call_seconds = time.perf_counter() - start
                writer.write(image_record(policy.name, image_id, image.size, result, load_seconds, call_seconds))
    if distributed:
        dist.barrier()
    if rank != 0:
        return None
    traits = {p.name: {t: bool(getattr(p, t, False)) for t in POLICY_TRAITS} for p in policies}
    return finalize(out, names, dataset, backend, traits, provenance)


def _check_unchanged(path: Path, record: dict, keys: list[str] | None, resume: bool, write: bool, what: str) -> None:
    """Write ``record`` when a run starts; on a resume, refuse when any of its ``keys`` (None: all) changed since:
    the old records would be mixed with new ones made from other inputs."""
    if resume and path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        differ = [k for k in (keys or sorted(saved.keys() | record.keys())) if saved.get(k) != record.get(k)]
        if differ:
            raise ValueError(f"--resume: {path.parent} was started with other {what} ({', '.join(differ)} differ "
                             f"from {path.name}): its records do not belong to this run. Start a new run with another "
                             f"--out")
    elif write:
        atomic_write_json(path, record)


def check_fresh(out_dir: str | Path) -> None:
    """Refuse to start a new run over the records of another (resuming is explicit)."""
    if any((Path(out_dir) / "records").glob("rank*.jsonl")):
        raise ValueError(f"{out_dir} already holds records of a run; pass --resume to continue it, or another --out")


def finalize(out_dir: str | Path, names: list[str], dataset: CocoDataset, backend: str = "pycocotools",
             traits: dict[str, dict[str, bool]] | None = None, provenance: dict | None = None) -> dict:
    """Merge the rank files in dataset order, write records.jsonl, detections/*.json and summary.json.

    ``traits``: each policy's :data:`eval.policy.POLICY_TRAITS` (False where not given)."""
    out = Path(out_dir)
    traits = traits or {}
    order = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
    merged: dict[tuple[str, int], dict] = {}
    for r in _read_records(out / "records"):
        if r["policy"] in names and r["image_id"] in order:
            merged.setdefault((r["policy"], r["image_id"]), r)
    missing = [(n, i) for n in names for i in dataset.image_ids if (n, i) not in merged]
    if missing:
        raise RuntimeError(f"{len(missing)} (policy, image) pairs have no record after the run, e.g. {missing[:3]}")
    records = sorted(merged.values(), key=lambda r: (order[r["image_id"]], names.index(r["policy"])))
    atomic_write_text(out / "records.jsonl", "".join(json.dumps(r, allow_nan=False) + "\n" for r in records))
    summaries = []
    for name in names:
        mine = [r for r in records if r["policy"] == name]
        detections = [d for r in mine for d in r["detections"]]
        atomic_write_json(out / "detections" / f"{name}.json", detections)
        metrics = evaluate_bbox(dataset.gt, detections, list(dataset.image_ids), backend=backend)
        summaries.append({**summarize_policy(name, mine, metrics),
                          **{t: traits.get(name, {}).get(t, False) for t in POLICY_TRAITS}})
    ids_sha256 = hashlib.sha256(json.dumps(sorted(dataset.image_ids)).encode()).hexdigest()  # the set, not the order
    summary = {"dataset": {**dataset.fingerprint, "images": str(dataset.images_dir), "num_images": len(dataset),
                           "image_ids_sha256": ids_sha256},
               "backend": backend, "policies": summaries,
               "provenance": {**(provenance or {}), "environment": environment(),
                              "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}}
    atomic_write_json(out / "summary.json", summary)
    return summary


def summarize_policy(name: str, records: list[dict], metrics) -> dict:
    """Accuracy and cost of one policy over its records (means and population std over images)."""
    stages = list(dict.fromkeys([*STAGES, *(s for r in records for s in r["flops"])]))

    def per_stage(key: str, scale: float) -> dict:
        rows = [{s: r[key].get(s, 0) * scale for s in stages} for r in records]
        for row in rows:
            row["total"] = sum(row.values())
        return {"mean": {s: statistics.fmean(row[s] for row in rows) for s in [*stages, "total"]},
                "std": {s: statistics.pstdev(row[s] for row in rows) for s in [*stages, "total"]}}

    gflops = per_stage("flops", 1e-9)
    seconds = per_stage("seconds", 1.0)
    factors = [r["factor"] for r in records]
    memory = {}
    for r in records:
        for s, v in r["peak_memory_bytes"].items():
            memory[s] = max(memory.get(s, 0), v)
    return {
        "policy": name, "num_images": len(records),
        "stats": dict(zip(STAT_NAMES, metrics.stats)),
        "per_category": metrics.to_dict()["per_category"],
        "num_detections": metrics.num_detections,
        "gflops": gflops,
        "gmacs_mean": {s: v / 2 for s, v in gflops["mean"].items()},
        "seconds": seconds,
        "images_per_s": 1.0 / seconds["mean"]["total"] if seconds["mean"]["total"] > 0 else None,
        "load_seconds_mean": statistics.fmean(r["load_seconds"] for r in records),
        "factors": factors,
        "sizes": dict(Counter(f"{h}x{w}" for h, w in (r["size"] for r in records)).most_common()),
        "resamplers": dict(Counter(r["resampler"] for r in records)),
        "flops_counted_images": sum("counted" in r["flops_source"].values() for r in records),
        "uncounted_ops": sorted({op for r in records for op in r["uncounted_ops"]}),
        "peak_memory_bytes": memory,
    }


def _read_records(records_dir: Path):
    for path in sorted(records_dir.glob("rank*.jsonl")):
        yield from read_jsonl(path)
