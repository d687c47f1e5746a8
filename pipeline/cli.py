"""The ``ardet`` command line: one console script, one subcommand per job.

Each subcommand lives in ``pipeline/commands/<name>.py`` and exposes ``add_parser(subparsers)``; heavy imports
(torch, transformers) happen inside the handlers so that ``ardet --help`` answers at once.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order is the order ``ardet --help`` lists them.
COMMANDS = [
    "info",
    "weights",
    "upscale",
    "sr_eval",
    "train_sr",
    "detect", "flops", "train_detector",
    "make_data",
    "eval_cmd",
    "report",
    "coco_eval",
    "train_scale",
    "sweep",
    "demo",
]


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples keep their line breaks; defaults are shown where there is one the help text does not already name."""

    def _get_help_string(self, action):
        if action.default in (None, False, []) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ardet", formatter_class=_HelpFormatter,
        description="Adaptive-resolution object detection: pick each image's input size, render it with LIIF, "
                    "detect with a DETR-family model, and measure accuracy against compute.",
        epilog="Run 'ardet COMMAND --help' for a command's options and examples.")
    parser.add_argument("-V", "--version", action="version", version=f"ardet {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"pipeline.commands.{name}").add_parser(sub)
    return parser


def add_command(sub, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand parser with the shared ``-v`` flag and an examples section in its ``--help``."""
    p = sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter,
                       epilog="examples:\n" + "\n".join("  " + line for line in examples.strip().splitlines()))
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    return p


def add_config_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--config FILE`` and repeatable ``--set key.sub=value`` overrides, for commands driven by a YAML config."""
    p.add_argument("--config", default=default, required=default is None, help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=1e-4 (repeatable)")


def check_not_inputs(outputs: list[tuple[str, object]], inputs: list) -> None:
    """Refuse an output path (``(option, path)``; None: not written) that is one of the input files."""
    from pathlib import Path

    given = {Path(p).resolve() for p in inputs}
    for option, path in outputs:
        if path and Path(path).resolve() in given:
            raise ValueError(f"{option} {path} is an input image, which it would overwrite; write it elsewhere")


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """``HxW`` as (H, W), within sr.check_size's limit (the largest image ardet reads)."""
    import sr

    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{option} must be HxW with positive integers, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{option} must be HxW with positive integers, got {text!r}")
    return sr.check_size((h, w))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level={0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG),
                        format="%(levelname)s %(name)s: %(message)s")
    from ardet.config import ConfigError
    from ardet.images import ImageDecodeError

    try:
        return args.func(args) or 0
    except (ConfigError, ImageDecodeError, OSError, ValueError, FloatingPointError) as e:
        # Expected user errors (OSError: a missing file, an output path that is a file or below one, a full disk)
        # get one clear line, not a traceback (-vv shows it).
        logging.getLogger("ardet").debug("traceback", exc_info=True)
        print(f"ardet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ardet {args.command}: interrupted", file=sys.stderr)
        return 130


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ardet")
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
