"""``ardet eval``: evaluate detection policies on a COCO-format dataset (accuracy, FLOPs, time), resumable, torchrun-able."""
from pipeline.cli import add_command, add_config_args


def add_parser(sub) -> None:
    p = add_command(sub, "eval", "evaluate policies on a COCO-format dataset: COCOeval bbox stats, per-stage FLOPs, "
                    "wall time and memory per image; writes records.jsonl, detections/, summary.json",
                    "ardet eval --config configs/eval/coco-mini-tiny.yaml --out runs/mini\n"
                    "ardet eval --config configs/eval/coco-mini-tiny.yaml --out runs/mini --resume\n"
                    "ardet eval --config cfg.yaml --limit 500 --set backend=faster-coco-eval\n"
                    "python -m torch.distributed.run --nproc_per_node 2 -m pipeline.cli eval --config cfg.yaml")
    add_eval_args(p)
    p.set_defaults(func=run)


def add_eval_args(p) -> None:
    """The options ``ardet eval`` and ``ardet sweep`` share."""
    add_config_args(p)
    p.add_argument("--out", help="run folder (overrides the config's output)")
    p.add_argument("--limit", type=int, help="evaluate the first N images (dataset.limit)")
    p.add_argument("--image-ids", help="file of image ids to evaluate (dataset.image_ids_file)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out, skipping finished images")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    summary, out = evaluate(args)
    if summary is not None:
        print_summary(summary)
        print(f"results in {out}/ (summary.json, records.jsonl, detections/); next: ardet report {out}")
    return 0


def evaluate(args):
    """Run (or resume) the evaluation the arguments describe; (summary on rank 0 else None, run folder)."""
    import os
    import shlex
    import sys
    from pathlib import Path

    import torch
    import torch.distributed as dist

    from ardet.config import load_config, override, save_config
    from ardet.device import resolve_device
    from ardet.files import module_sha256
    from detector import load_detector
    from eval import CocoDataset, EvalConfig, check_fresh, check_resumable, read_image_ids, run_evaluation
    from pipeline.policies import PolicyContext, build_policies

    overrides = list(args.overrides)
    for key, value in (("output", args.out), ("dataset.limit", args.limit), ("dataset.image_ids_file", args.image_ids)):
        if value is not None:
            overrides.append(override(key, value))
    cfg = load_config(EvalConfig, args.config, overrides)
    out = Path(cfg.output)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = str(resolve_device(cfg.device))  # "auto" -> "cuda" or "cpu"
    if world > 1 and not dist.is_initialized():  # launched by torchrun: one process per rank
        if device.startswith("cuda"):
            if device == "cuda":  # each rank its own GPU
                device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(torch.device(device))
            dist.init_process_group("nccl", device_id=torch.device(device))
        else:
            dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    try:
        if args.resume:
            check_resumable(cfg, out)
        else:
            check_fresh(out)
            if rank == 0:
                save_config(cfg, out)
        data = cfg.dataset
        ids = read_image_ids(data.image_ids_file) if data.image_ids_file else data.image_ids
        dataset = CocoDataset(data.annotations, data.images, limit=data.limit, image_ids=ids)
        torch.manual_seed(cfg.seed)  # a random-init detector is the same on every rank and every run
        detector = load_detector(cfg.detector.spec, device=device, threshold=cfg.detector.threshold,
                                 top_k=cfg.detector.top_k, categories=dataset.categories)
        context = PolicyContext(detector, device, dataset)
        policies = build_policies(cfg.policies, context)
        # Each model's identity: the sha256 of the weights it loaded (a resume with other weights is refused)
        weights = {"detector": module_sha256(detector.model),
                   **{f"{kind} {name}": module_sha256(model) for (kind, name), model in context.models.items()}}
        provenance = {"command": shlex.join(sys.argv), "resumed": args.resume, "device": device, "world_size": world,
                      "seed": cfg.seed, "detector": {"spec": cfg.detector.spec, "sha256": weights["detector"],
                                                     "threshold": cfg.detector.threshold, "top_k": cfg.detector.top_k},
                      "policies": {p.name: entry for p, entry in zip(policies, cfg.policies)}}
        summary = run_evaluation(policies, dataset, out, resume=args.resume, backend=cfg.backend,
                                 progress=not args.no_progress, provenance=provenance, weights=weights)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return summary, out


def print_summary(summary: dict) -> None:
    names = ("AP", "AP50", "AP_S")
    width = max(28, *(len(p["policy"]) for p in summary["policies"]))
    print(f"{'policy':{width}s} " + " ".join(f"{n:>6s}" for n in names) + "  GFLOPs/img   img/s")
    for p in summary["policies"]:
        ips = p["images_per_s"]
        print(f"{p['policy']:{width}s} " + " ".join(f"{p['stats'][n]:6.3f}" if p['stats'][n] >= 0 else f"{'-':>6s}"
                                               for n in names)
              + f"  {p['gflops']['mean']['total']:10.2f}  {'-' if ips is None else f'{ips:6.2f}'}")
