"""The ``ardet eval`` config: dataset, detector, policies, output. Loaded with :func:`ardet.config.load_config`."""
from __future__ import annotations

import itertools

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ardet.config import ConfigError, config_differences, config_to_dict, dump_yaml, load_yaml


@dataclass
class DatasetConfig:
    annotations: str = ""  # COCO instances JSON
    images: str = ""  # folder holding the images' file_name paths
    limit: int | None = None  # first N images (after image_ids)
    image_ids: list[int] | None = None  # evaluate only these, in this order
    image_ids_file: str | None = None  # ... or the ids in this file (JSON list or whitespace-separated)


@dataclass
class DetectorSpec:
    """Which detector an evaluation runs (a detector.load_detector spec) and how its outputs are decoded."""

    spec: str = ""  # detector.load_detector spec: hub id, save_pretrained dir, or a project YAML (random init)
    threshold: float = 0.0
    top_k: int = 100


@dataclass
class EvalConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    detector: DetectorSpec = field(default_factory=DetectorSpec)
    # Each entry: {kind: NAME, ...the kind's options}; kinds are registered in pipeline.policies.
    policies: list[dict[str, Any]] = field(default_factory=list)
    # Grids of policies: each entry is a policy entry plus ``sweep: {option: [values, ...]}``; it stands for one
    # policy per combination of the swept values. Expanded into ``policies`` on load (then emptied).
    sweep: list[dict[str, Any]] = field(default_factory=list)
    output: str = "runs/eval"
    device: str = "cpu"
    backend: Literal["pycocotools", "faster-coco-eval"] = "pycocotools"
    seed: int = 0  # seeds torch before the detector is built (random-init detectors) and before the run

    def __post_init__(self):
        self.policies = [*self.policies, *expand_sweep(self.sweep)]
        self.sweep = []
        for name, value in (("dataset.annotations", self.dataset.annotations), ("dataset.images", self.dataset.images),
                            ("detector.spec", self.detector.spec), ("output", self.output)):
            if not value:
                raise ValueError(f"{name} is required")
        if not self.policies:
            raise ValueError("policies: give at least one, e.g. [{kind: fixed, short: 800, resampler: bilinear}]")
        if self.dataset.image_ids is not None and self.dataset.image_ids_file is not None:
            raise ValueError("give dataset.image_ids or dataset.image_ids_file, not both")


def expand_sweep(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``[{kind: fixed, sweep: {short: [128, 256], resampler: [bilinear, liif]}, sr_model: m}]`` -> four policy
    entries, one per combination (in order, the last swept option varying fastest). A ``name`` with ``{option}``
    fields is filled in per combination (``name: "fixed-{short}-{sr_model}"``), for options the default names omit."""
    policies = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("sweep") or {}, dict):
            raise ConfigError(f"sweep entry {entry!r}: expected a mapping whose sweep: maps options to lists of values")
        grid = dict(entry.get("sweep") or {})
        base = {k: v for k, v in entry.items() if k != "sweep"}
        bad = [k for k, v in grid.items() if not isinstance(v, list) or not v]
        if bad:
            raise ConfigError(f"sweep entry {entry!r}: swept options must be non-empty lists: {', '.join(bad)}")
        for values in itertools.product(*grid.values()):
            policy = {**base, **dict(zip(grid, values))}
            if isinstance(base.get("name"), str):
                try:
                    policy["name"] = base["name"].format(**policy)
                except (KeyError, IndexError, ValueError) as e:
                    raise ConfigError(f"sweep entry {entry!r}: name {base['name']!r} names no option of the entry "
                                      f"({e!r}); fields are the entry's options, e.g. {{short}}") from None
            policies.append(policy)
    return policies


def check_resumable(cfg: EvalConfig, out_dir: str | Path) -> None:
    """A resumed run must use the config it started with (the output folder aside), or its numbers would mix."""
    path = Path(out_dir) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"--resume: {path} not found; nothing to resume in {out_dir}")
    saved = load_yaml(path.read_text(encoding="utf-8"))
    now = load_yaml(dump_yaml(config_to_dict(cfg)))  # same normalisation as the saved file
    diff = [k for k in config_differences(saved, now) if k != "output"]
    if diff:
        raise ConfigError(f"--resume: the config differs from {path} in {', '.join(diff)}; resume with the same "
                          f"config, or start a new run with another --out")
