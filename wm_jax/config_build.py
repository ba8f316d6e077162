"""Typed dataclasses from nested mappings, YAML files and dotted ``key=value`` overrides (wm_jax.config's machinery).

Generic: nothing here knows the config's sections; every error is a :class:`ConfigError` naming the dotted key or the
file.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from wm_jax.config_checks import ConfigError


def check_value(key: str, tp: Any, value: Any) -> Any:
    """Coerce `value` to the annotated type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if tp is float:
        return check_float(key, value)
    if tp in (int, str, bool):
        if type(value) is not tp:
            raise ConfigError(f"config key '{key}' expects {tp.__name__}, got {value!r} ({type(value).__name__})")
        return value
    if origin is tuple:
        (elem, _) = typing.get_args(tp)
        if isinstance(value, str):
            value = [yaml.safe_load(v) for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' expects a list, got {value!r}")
        return tuple(check_value(f"{key}[{i}]", elem, v) for i, v in enumerate(value))
    raise ConfigError(f"config key '{key}' has unsupported type {tp}")


# A decimal number as written in YAML 1.2 or Python: 1e-4, 3E5, .5, -2.5e-3, 10. YAML 1.1 (PyYAML) reads the ones
# without a dot or with a capital E as strings, so float keys accept those strings too.
DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def check_float(key: str, value: Any) -> float:
    """A finite float from a number or a decimal string, or ConfigError naming `key`."""
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None and not math.isfinite(number):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        if number is not None and DECIMAL.fullmatch(text):
            return number
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return float(value)
    raise ConfigError(f"config key '{key}' expects float, got {value!r} ({type(value).__name__})")


def build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """An instance of the dataclass `cls` from a nested mapping: every key known, every value coerced to its
    annotated type (nested dataclasses from nested mappings), or ConfigError naming the dotted key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in values:
        if k not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"unknown config key '{prefix}{k}' (known keys here: {known})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        tp, v, key = hints[f.name], values[f.name], prefix + f.name
        if dataclasses.is_dataclass(tp):
            if not isinstance(v, dict):
                raise ConfigError(f"config key '{key}' is a section; expected a mapping, got {v!r}")
            kwargs[f.name] = build(tp, v, key + ".")
        else:
            kwargs[f.name] = check_value(key, tp, v)
    return cls(**kwargs)


def merge(base: dict, over: dict) -> dict:
    """`base` updated by `over`, nested mappings merged key by key (neither is changed)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def nest(flat: dict[str, Any], source: str) -> dict:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``; a key that is both a value and a section names `source`."""
    out: dict = {}
    for dotted, v in flat.items():
        parts = dotted.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key '{dotted}' from {source} conflicts with another override")
        node[parts[-1]] = v
    return out


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A YAML config file as a mapping, with the file it ``extends:`` (relative to it) merged under it."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config file {path} extends itself")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    parent = raw.pop("extends", None)
    if parent is not None:
        raw = merge(read_yaml(path.parent / parent, (*seen, path)), raw)
    return raw


def parse_override(text: str) -> tuple[str, Any]:
    """``'data.episodes=200'`` -> ``('data.episodes', 200)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. data.episodes=200)")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed
