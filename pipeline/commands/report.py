"""``ardet report``: accuracy-against-compute tables and plots across finished eval runs."""
from pipeline.cli import add_command


def add_parser(sub) -> None:
    p = add_command(sub, "report", "tables and plots of accuracy against compute across 'ardet eval' runs: "
                    "report.md, pareto.png, results.json, results.csv",
                    "ardet report runs/mini\n"
                    "ardet report runs/fixed runs/adaptive --out reports/compare")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders written by 'ardet eval'")
    p.add_argument("--out", help="output folder (default: the first RUN_DIR)")
    p.set_defaults(func=run)


def run(args) -> int:
    from eval import write_report

    paths = write_report(args.runs, args.out or args.runs[0])
    for path in paths.values():
        print(path)
    return 0
