from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import yaml

from ardet.config import ConfigError, apply_overrides, load_config, save_config


@dataclass
class Optim:
    lr: float = 1e-3
    steps: int = 10
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Run:
    name: str = "run"
    device: Literal["cpu", "cuda"] = "cpu"
    sizes: list[int] = field(default_factory=lambda: [640, 800])
    limit: Optional[int] = None
    amp: bool = False
    optim: Optim = field(default_factory=Optim)


def _write(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_yaml_and_overrides_become_typed_dataclasses(tmp_path):
    path = _write(tmp_path, {"name": "a", "optim": {"lr": 1, "betas": [0.5, 0.6]}})
    cfg = load_config(Run, path, ["optim.steps=20", "sizes=[512, 1024]", "limit=5", "device=cuda", "amp=true"])
    assert cfg == Run(name="a", device="cuda", sizes=[512, 1024], limit=5, amp=True,
                      optim=Optim(lr=1.0, steps=20, betas=(0.5, 0.6)))
    assert isinstance(cfg.optim.lr, float)
    assert load_config(Run) == Run()


@pytest.mark.parametrize("data, overrides, match", [
    ({"nmae": "x"}, [], "unknown config key: nmae"),
    ({"optim": {"lr": 1, "stpes": 3}}, [], "unknown config key in optim: optim.stpes"),
    ({}, ["optim.lrr=2"], "optim.lrr"),
    ({}, ["optim.steps=2.5"], "optim.steps: expected an integer"),
    ({}, ["device=tpu"], "device: 'tpu' is not one of"),
    ({}, ["amp=1"], "amp: expected true/false"),
    ({}, ["sizes=[1, x]"], r"sizes\[1\]: expected an integer"),
    ({}, ["optim.betas=[1]"], "optim.betas: expected 2 values"),
    ({}, ["name"], "not of the form key.sub=value"),
])
def test_bad_configs_name_the_key(tmp_path, data, overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Run, _write(tmp_path, data), overrides)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Run, tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(Run, tmp_path / "list.yaml")


def test_numbers_in_exponent_notation_are_numbers(tmp_path):
    # YAML 1.2 reads all of these as floats; PyYAML's YAML 1.1 rules alone would read the first three as strings
    (tmp_path / "e.yaml").write_text("optim:\n  lr: 1e-4\n")
    assert load_config(Run, tmp_path / "e.yaml").optim.lr == 1e-4
    for raw, value in (("1e-4", 1e-4), ("3E5", 3e5), ("+2.5e+3", 2500.0), ("1.0e-05", 1e-5), (".5e1", 5.0)):
        assert load_config(Run, None, [f"optim.lr={raw}"]).optim.lr == value
    assert load_config(Run, None, ["name=1e3x"]).name == "1e3x"
    with pytest.raises(ConfigError, match="optim.steps: expected an integer"):
        load_config(Run, None, ["optim.steps=1e3"])


def test_overrides_do_not_mutate_the_input():
    data = {"optim": {"lr": 1.0}}
    assert apply_overrides(data, ["optim.lr=2"]) == {"optim": {"lr": 2}}
    assert data == {"optim": {"lr": 1.0}}


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_config(Run, None, ["optim.betas=[0.1, 0.2]", "limit=3"])
    path = save_config(cfg, tmp_path / "out")
    assert path.name == "config.yaml"
    assert load_config(Run, path) == cfg
