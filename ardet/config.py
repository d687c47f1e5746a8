"""YAML configs loaded into typed dataclasses, with ``key.sub=value`` overrides.

Unknown keys and values of the wrong type are errors that name the key: a typo must never be silently ignored.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

T = TypeVar("T")


# YAML 1.2's core schema for booleans and numbers. PyYAML follows YAML 1.1, which reads ``1e-4`` (no dot) as a
# string, ``010`` as octal 8, ``1:30`` as 90 and ``yes``/``off`` as booleans: an id list or a step count would change.
_YAML12 = {
    "tag:yaml.org,2002:bool": (r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    "tag:yaml.org,2002:int": (r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    "tag:yaml.org,2002:float": (r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+.0123456789"),
}


def _yaml12(base: type) -> type:
    """``base`` (a SafeLoader or SafeDumper) resolving plain scalars as YAML 1.2 does; the dumper then quotes every
    string the loader would read as something else, so a saved config.yaml reads back as it was."""
    cls = type(f"Yaml12{base.__name__}", (base,), {})
    cls.yaml_implicit_resolvers = {first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML12]
                                   for first, resolvers in base.yaml_implicit_resolvers.items()}
    for tag, (pattern, first) in _YAML12.items():
        cls.add_implicit_resolver(tag, re.compile(pattern), list(first))
    return cls


class _Loader(_yaml12(yaml.SafeLoader)):
    def construct_yaml_int(self, node) -> int:  # 1.2: decimal unless 0o / 0x, so 010 is ten
        value = self.construct_scalar(node)
        return int(value, 0) if value.startswith(("0o", "0x")) else int(value, 10)

    def construct_mapping(self, node, deep=False) -> dict:
        seen = set()
        for key_node, _ in node.value:  # a repeated key would silently keep only its last value
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`, merged by the base class
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Dumper = _yaml12(yaml.SafeDumper)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2's booleans and numbers, and repeated keys refused."""
    return yaml.load(text, Loader=_Loader)


def dump_yaml(data: Any) -> str:
    """YAML that :func:`load_yaml` reads back as ``data`` (strings like ``1e5`` or ``010`` quoted)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def is_number(value: object) -> bool:
    """An int or a float, not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def repeated(values: Iterable) -> list:
    """The values that occur more than once, in first-seen order (one counting pass, not a count per value)."""
    return [v for v, n in Counter(values).items() if n > 1]


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass."""


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] = ()) -> T:
    """Build ``cls`` from a YAML file (or its defaults when ``path`` is None) and ``key.sub=value`` overrides."""
    data: dict = {}
    if path is not None:
        try:
            data = load_yaml(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except OSError as e:  # a folder, no permission
            raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text (UTF-8) YAML file") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    data = apply_overrides(data, overrides)
    return from_dict(cls, data)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of ``data`` with each ``a.b.c=value`` set; the value is parsed as YAML (``3``, ``[1,2]``, ``null``)."""
    data = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if node.get(part) is None:  # absent, or a section left empty in the file (`train:`)
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        try:
            node[leaf] = load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML: {e}") from None
    return data


def override(key: str, value: str | int | float) -> str:
    """The ``key=value`` override that sets exactly ``value``: a path stays the string it is (``run #2`` would lose
    its comment, ``2024`` would become a number), as command-line options want."""
    import json

    return f"{key}={json.dumps(value, ensure_ascii=False)}"  # JSON is YAML: a double-quoted string, or the number


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f" in {prefix.rstrip('.')}" if prefix else ""
        raise ConfigError(f"unknown config key{where}: {', '.join(prefix + k for k in unknown)} "
                          f"(known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(hints[name], value, prefix + name) for name, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:  # a required field without a default; __post_init__ validation
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from None


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def check_numbers(obj: Any, section: str, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """Each named field of ``obj`` a finite number, > 0 (``positive``) or >= 0 (``non_negative``): a zero interval or
    a NaN rate would otherwise fail far from its cause (a division by zero at step 1, a JSON error in the log)."""
    for names, minimum_ok, what in ((positive, lambda v: v > 0, "> 0"), (non_negative, lambda v: v >= 0, ">= 0")):
        for name in names:
            value = getattr(obj, name)
            if not (is_number(value) and math.isfinite(value) and minimum_ok(value)):
                raise ValueError(f"{section}.{name} must be a finite number {what}, got {value}")


def resume_key(cfg: Any, may_change: tuple[str, ...]) -> dict:
    """What a training checkpoint records of its config: all of it but the dotted keys in ``may_change`` (more steps,
    logging, folder, device: what a resumed run may set differently without mixing two runs)."""
    d = config_to_dict(cfg)
    for key in may_change:
        *parents, last = key.split(".")
        node = d
        for part in parents:
            node = node[part]
        del node[last]
    return d


def config_differences(a: dict, b: dict) -> list[str]:
    """The dotted keys (``dataset.limit``) whose values differ between two config dicts."""
    def flat(d: dict, prefix: str = "") -> dict:
        return {k2: v2 for k, v in d.items()
                for k2, v2 in (flat(v, f"{prefix}{k}.").items() if isinstance(v, dict) and v else [(prefix + k, v)])}
    a, b = flat(a), flat(b)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def check_resume(saved: dict, now: dict, checkpoint: str | os.PathLike) -> None:
    """Refuse to resume ``checkpoint`` under a config other than the one that wrote it (``saved``, its
    :func:`resume_key`)."""
    differ = config_differences(saved, now)
    if differ:
        raise ValueError(f"{checkpoint} was written by a different config (it differs in {', '.join(differ)}); resume "
                     f"with that config, or use another out_dir (or delete the checkpoint to start over)")


def save_config(cfg: Any, out_dir: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the resolved config beside a run's outputs, so every result says exactly how it was made."""
    from ardet.files import atomic_write_text

    path = Path(out_dir) / name
    atomic_write_text(path, dump_yaml(_plain(config_to_dict(cfg))))
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def _expand_home(value: Any) -> Any:
    """'~' and '~/...' strings, also inside free-form mappings and lists (policy entries): no shell expanded them."""
    if isinstance(value, str):
        return os.path.expanduser(value) if value == "~" or value.startswith("~/") else value
    if isinstance(value, dict):
        return {k: _expand_home(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_home(v) for v in value]
    return value


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return _expand_home(value)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _expand_home(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if not is_int(value):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if not is_number(value):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return _expand_home(value)
    raise ConfigError(f"{key}: unsupported config type {tp}")
