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


def test_user_mistakes_are_one_line_errors_before_any_work(tmp_path, capsys, monkeypatch):
    """Exit 2 and one line naming the problem; nothing written. Each fails before a model or a split is made."""
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("ARDET_CACHE", str(tmp_path / "cache"))  # an empty cache: pull has work to do
    cases = [
        (["detect", "a.png", "--policy", "adaptive", "--predictor", "p.safetensors", "--size", "96"],
         "does not use --size"),  # would be silently ignored
        (["detect", "a.png", "--policy", "fixed", "--knob", "0.5"], "does not use --knob"),
        (["detect", "a.png", "--scale", "2", "--max-size", "800"], "--max-size does not apply with --scale"),
        (["make-data", "--out", str(tmp_path / "d"), "--num-train", "3", "--num-val", "-1"], "val images"),
        (["make-data", "--out", str(tmp_path / "d"), "--num-train", "0", "--num-val", "0", "--num-test", "0"],
         "nothing to make"),
        (["flops", "--size", "20000x20000"], "exceeds the limit"),
        (["weights", "pull", "liif-edsr-baseline", "--from", str(tmp_path)], "is a folder"),
        (["report", str(tmp_path / "file"), "--out", str(tmp_path / "o")], "summary.json"),
        (["eval", "--config", str(tmp_path)], "cannot read the config file"),
        (["sr-eval", "--model", "liif-nano", "--data", str(tmp_path), "--scales", "2,x"], "comma-separated"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "d").exists()  # make-data checked every count before writing a split
