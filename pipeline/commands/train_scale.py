"""``ardet train-scale``: train the per-image scale predictor (Elastic-style losses or detector oracle labels)."""
from pipeline.cli import add_command, add_config_args


def add_parser(sub) -> None:
    p = add_command(sub, "train-scale", "train the scale predictor from a YAML config (resumes from its out_dir)",
                    """
ardet train-scale --config configs/scale_predictor/elastic.yaml
ardet train-scale --config configs/scale_predictor/oracle.yaml --set oracle.lam=0.005 --set out_dir=runs/sp-lam005
ardet train-scale --config configs/scale_predictor/elastic.yaml --set optim.steps=4000   # continue a finished run""")
    add_config_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ardet.config import load_config
    from scale_predictor.train import TrainScaleConfig, train

    cfg = load_config(TrainScaleConfig, args.config, args.overrides)
    path = train(cfg, progress=not args.no_progress)
    print(path)
    return 0
