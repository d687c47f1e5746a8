"""``ardet train-sr``: train a LIIF model with the reference recipe from a YAML config (resumable)."""
from pipeline.cli import add_command, add_config_args


def add_parser(sub) -> None:
    p = add_command(sub, "train-sr", "train a LIIF super-resolution model on a folder of HR images (resumes a run "
                    "from its out_dir/last.pt)",
                    "ardet train-sr --config configs/sr/liif-small.yaml\n"
                    "ardet train-sr --config configs/sr/liif-small.yaml --set train.steps=100 --set data.dir=photos/")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ardet.config import load_config
    from sr.train import Config, train

    print(train(load_config(Config, args.config, args.overrides)))
    return 0
