"""COCO evaluation of detection policies: data, metrics, honest compute accounting, the run harness, reports.

    from eval import CocoDataset, evaluate_bbox, run_evaluation
    data = CocoDataset("instances_val2017.json", "val2017/", limit=500)
    summary = run_evaluation([policy_a, policy_b], data, "runs/val500")   # JSONL per image, resumable
    metrics = evaluate_bbox(data.gt, detections, list(data.image_ids))    # 12 COCOeval stats + per-category AP

A policy is any object with ``name`` and ``__call__(LoadedImage) -> ImageResult``; it measures its stages with a
:class:`CostMeter`. Concrete policies live in ``pipeline.policies``.
"""
from ardet.coco import BACKENDS, STAT_NAMES, CocoMetrics, check_detections, evaluate_bbox, load_coco_json, validate_coco
from eval.coco import CocoDataset, read_image_ids
from eval.config import DatasetConfig, DetectorSpec, EvalConfig, check_resumable
from eval.cost import STAGES, CostMeter, measuring
from eval.harness import check_fresh, finalize, image_record, run_evaluation
from eval.policy import ImageResult, Policy
from eval.report import pareto_front, write_report

__all__ = [
    "CocoDataset", "load_coco_json", "read_image_ids", "validate_coco",
    "DatasetConfig", "DetectorSpec", "EvalConfig", "check_resumable",
    "STAGES", "CostMeter", "measuring",
    "check_fresh", "finalize", "image_record", "run_evaluation",
    "BACKENDS", "STAT_NAMES", "CocoMetrics", "check_detections", "evaluate_bbox",
    "ImageResult", "Policy",
    "pareto_front", "write_report",
]
