"""``ardet flops``: a detector's FLOPs and MACs at an input size, per op type (attention on CPU included)."""
from pipeline.cli import add_command


def add_parser(sub) -> None:
    p = add_command(sub, "flops", "count a detector's FLOPs (2 per multiply-add) and MACs at an input size, per op",
                    "ardet flops --detector configs/detector/detr-r50.yaml --size 800x1067\n"
                    "ardet flops --detector runs/tiny-conditional-detr --size 128x160 --json flops.json")
    p.add_argument("--detector", default="facebook/detr-resnet-50",
                   help="hub id (online), model folder, or YAML config (random init: FLOPs need no weights)")
    p.add_argument("--size", required=True, help="detector input size HxW")
    p.add_argument("--json", help="also write the counts to this JSON file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ardet.files import atomic_write_json
    from detector import load_detector
    from pipeline.cli import parse_size

    size = parse_size(args.size)
    count = load_detector(args.detector).count_flops(size)
    print(f"{'op':48s} {'GFLOPs':>10s} {'GMACs':>10s} {'share':>7s}")
    for op, n in sorted(count.by_op.items(), key=lambda kv: -kv[1]):
        print(f"{op:48s} {n / 1e9:10.3f} {n / 2e9:10.3f} {n / count.flops:7.1%}")
    print(f"{'total':48s} {count.gflops:10.3f} {count.macs / 1e9:10.3f}")
    print(f"not counted (element-wise, norms, softmax...): {', '.join(count.uncounted_ops) or 'none'}")
    if args.json:
        atomic_write_json(args.json, {"detector": args.detector, "size": list(size), "flops": count.flops,
                                      "macs": count.macs, "by_op": count.by_op,
                                      "uncounted_ops": list(count.uncounted_ops)})
    return 0
