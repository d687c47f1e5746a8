"""``ardet sweep``: the eval harness over a grid of policies, then the trade-off report, in one command."""
from pipeline.cli import add_command
from pipeline.commands import eval_cmd


def add_parser(sub) -> None:
    p = add_command(sub, "sweep", "evaluate a grid of policies (fixed sizes x resamplers, adaptive over knob values, "
                    "cascade over thresholds, oracle) and write the accuracy/FLOPs trade-off report",
                    "ardet sweep --config configs/sweep/demo.yaml\n"
                    "ardet sweep --config configs/sweep/demo.yaml --out runs/demo --resume\n"
                    "ardet sweep --config configs/sweep/demo.yaml --limit 20 --out runs/quick")
    eval_cmd.add_eval_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from eval import write_report

    summary, out = eval_cmd.evaluate(args)
    if summary is None:  # not rank 0
        return 0
    eval_cmd.print_summary(summary)
    paths = write_report([out], out)
    print("report: " + ", ".join(str(p) for p in paths.values()))
    return 0
