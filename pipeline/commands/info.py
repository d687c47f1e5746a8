"""``ardet info``: versions and devices, for bug reports and set-up checks."""
from pipeline.cli import add_command


def add_parser(sub) -> None:
    p = add_command(sub, "info", "print versions of ardet and its stack, the devices torch sees and the weights "
                    "cache folder",
                    "ardet info")
    p.set_defaults(func=run)


def run(args) -> int:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from ardet.weights import cache_dir

    for name in ("ardet", "torch", "torchvision", "transformers", "timm", "pycocotools", "safetensors", "numpy"):
        try:
            print(f"{name:14s} {version(name)}")
        except PackageNotFoundError:
            print(f"{name:14s} not installed")
    print(f"{'python':14s} {platform.python_version()}")
    print(f"{'cuda':14s} {torch.cuda.is_available() and torch.cuda.get_device_name(0) or 'not available'}")
    print(f"{'cpu threads':14s} {torch.get_num_threads()}")
    print(f"{'weights cache':14s} {cache_dir()}")
    return 0
