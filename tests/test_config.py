from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

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


def test_yaml_1_2_numbers_and_booleans_and_no_repeated_keys(tmp_path):
    from ardet.config import dump_yaml, load_yaml

    # YAML 1.1 (PyYAML) would read 010 as 8, 1:30 as 90 and yes/off as booleans.
    assert load_yaml("[010, 1:30, yes, off, true, 1e-3, 0x10, .5]") == [10, "1:30", "yes", "off", True, 1e-3, 16, 0.5]
    for text in ("1e5", "010", "2e3", "yes", "true", "1:30", "run #2"):  # strings that look like something else
        assert load_yaml(dump_yaml({"name": text})) == {"name": text}
    assert load_yaml("d: &d {lr: 1}\nopt:\n  <<: *d\n  steps: 5\n")["opt"] == {"lr": 1, "steps": 5}  # merge keys
    (tmp_path / "twice.yaml").write_text("optim: {lr: 0.1, lr: 0.2}\n")
    with pytest.raises(ConfigError, match="duplicate key 'lr'"):
        load_config(Run, tmp_path / "twice.yaml")


def test_override_edge_cases(tmp_path, monkeypatch):
    from ardet.config import override

    (tmp_path / "empty.yaml").write_text("optim:\n")  # a section left empty in the file
    assert load_config(Run, tmp_path / "empty.yaml", ["optim.lr=0.5"]).optim.lr == 0.5
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, None, ["sizes=[1"])
    # Command-line options become overrides that keep their text: a '#' or a number-like name stays a string.
    for name in ("run #2", "2024", "1e3", "%run", "runs/\U0001F600"):
        assert load_config(Run, None, [override("name", name)]).name == name
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_config(Run, None, ["name=~/runs/a"]).name == str(tmp_path / "runs" / "a")  # no shell expanded it
    # also inside free-form entries (a policy's predictor path), not in the middle of a string
    @dataclass
    class Sweep:
        policies: list[dict[str, Any]] = field(default_factory=list)

    policies = load_config(Sweep, None, ["policies=[{kind: adaptive, predictor: ~/p, sizes: [~/a, x~/b]}]"]).policies
    assert policies == [{"kind": "adaptive", "predictor": str(tmp_path / "p"), "sizes": [str(tmp_path / "a"), "x~/b"]}]
    with pytest.raises(ConfigError, match="config file"):
        load_config(Run, tmp_path)  # a folder


def test_stage_configs_refuse_silent_mistakes():
    import sr
    from detector.config import DetectorConfig
    from detector.model import build_model
    from scale_predictor.train import TrainScaleConfig

    with pytest.raises(ConfigError, match="max_images"):  # -3 would slice the last 3 images off
        load_config(TrainScaleConfig, None, ["data.max_images=-3"])
    tiny = Path(__file__).parents[1] / "configs/detector/tiny-conditional-detr.yaml"
    with pytest.raises(ValueError, match="eos_coeficient are not conditional_detr config fields"):
        build_model(load_config(DetectorConfig, tiny, ["model.extra={eos_coeficient: 0.5}"]).model)
    eager = build_model(load_config(DetectorConfig, tiny, ["model.extra={attn_implementation: eager}"]).model)
    assert eager.config._attn_implementation == "eager"  # an init-only keyword is a real option
    with pytest.raises(ValueError, match="unsupported LIIF args"):
        sr.create_model("liif-nano", bogus=1)
    for override, message in (("train.lr_drop_at=.nan", "lr_drop_at must be a finite number"),  # was: never
                              ("model.queries=0", "queries must be a finite number > 0")):  # was: a traceback
        with pytest.raises(ValueError, match=message):
            load_config(DetectorConfig, tiny, [override])


def test_a_binary_config_file_is_one_clear_error(tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ConfigError, match="c.yaml: not a text"):
        load_config(Run, tmp_path / "c.yaml")


def test_sweep_entries_expand_to_one_policy_per_combination_with_templated_names():
    from eval.config import EvalConfig

    cfg = load_config(EvalConfig, None, [
        "dataset.annotations=a.json", "dataset.images=i", "detector.spec=d.yaml", "policies=[{kind: oracle}]",
        "sweep=[{kind: fixed, max_size: 512, sweep: {short: [128, 256], sr_model: [liif-nano, liif-mini]},"
        " resampler: liif, name: 'fixed-{short}-{sr_model}'}, {kind: cascade, sweep: {threshold: [0.5]}}]"])
    assert cfg.sweep == []
    assert [(p["kind"], p.get("short"), p.get("sr_model"), p.get("name")) for p in cfg.policies] == [
        ("oracle", None, None, None),
        ("fixed", 128, "liif-nano", "fixed-128-liif-nano"), ("fixed", 128, "liif-mini", "fixed-128-liif-mini"),
        ("fixed", 256, "liif-nano", "fixed-256-liif-nano"), ("fixed", 256, "liif-mini", "fixed-256-liif-mini"),
        ("cascade", None, None, None)]
    assert cfg.policies[-1]["threshold"] == 0.5 and cfg.policies[1]["max_size"] == 512
    with pytest.raises(ConfigError, match="names no option of the entry"):
        load_config(EvalConfig, None, ["dataset.annotations=a.json", "dataset.images=i", "detector.spec=d.yaml",
                                       "sweep=[{kind: fixed, sweep: {short: [1, 2]}, name: 'f-{shrot}'}]"])
    with pytest.raises(ConfigError, match="non-empty lists: short"):
        load_config(EvalConfig, None, ["dataset.annotations=a.json", "dataset.images=i", "detector.spec=d.yaml",
                                       "sweep=[{kind: fixed, sweep: {short: []}}]"])
