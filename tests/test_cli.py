import subprocess
import sys

import pytest

from pipeline.cli import COMMANDS, build_parser, main


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "--help"], capture_output=True, text=True, check=True)
    for name in build_parser()._subparsers._group_actions[0].choices:
        assert name in out.stdout
    assert len(build_parser()._subparsers._group_actions[0].choices) == len(COMMANDS)


@pytest.mark.parametrize("name", list(build_parser()._subparsers._group_actions[0].choices))
def test_every_subcommand_has_help_with_examples(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"ardet {name}" in out


def test_info_runs():
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "info"], capture_output=True, text=True, check=True)
    assert "torch" in out.stdout and "2.14.1" in out.stdout
