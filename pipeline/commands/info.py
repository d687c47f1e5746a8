"""``ardet info``: versions and devices, for bug reports and set-up checks."""
from pipeline.cli import add_command


def add_parser(sub) -> None:
    p = add_command(sub, "info", "print versions of ardet and its stack, the devices torch sees and the weights "
                    "cache folder",
                    "ardet info")
    p.set_defaults(func=run)


def run(args) -> int:
    from ardet.device import environment
    from ardet.weights import cache_dir

    env = environment()
    for name, installed in env["versions"].items():
        print(f"{name:14s} {installed or 'not installed'}")
    print(f"{'python':14s} {env['python']}")
    print(f"{'cpu':14s} {env['cpu']} ({env['cpu_count']} cores)")
    print(f"{'cuda':14s} {env['gpu'] or 'not available'}")
    print(f"{'cpu threads':14s} {env['torch_threads']}")
    print(f"{'weights cache':14s} {cache_dir()}")
    return 0
