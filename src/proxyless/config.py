"""Strict conversion between typed dataclass configs and plain dicts (JSON / YAML).

Unknown keys, missing keys and wrong types are errors that name the field, so a typo in a
config file is caught at load time instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from proxyless.errors import ProxylessError

T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """A dataclass (possibly nested, with tuples) as plain JSON-compatible data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ProxylessError as err:
                errors.append(str(err))
        raise ProxylessError(errors[0] if errors else f"{where}: must not be null")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ProxylessError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        item_hint = args[0] if args else Any
        items = [_convert(v, item_hint, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ProxylessError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ProxylessError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ProxylessError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProxylessError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ProxylessError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types by name."""
    if not isinstance(data, dict):
        raise ProxylessError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ProxylessError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed keys are {', '.join(fields)}"
        )
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ProxylessError(f"{where}: missing required key {name!r}")
    return cls(**kwargs)


def read_mapping(path: str | Path, what: str = "file") -> dict:
    """Read a JSON or YAML file holding one mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ProxylessError(f"{what} {path} does not exist (or is not a file)")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ProxylessError(f"{what} {path} is not valid JSON/YAML: {err}") from None
    if not isinstance(data, dict):
        raise ProxylessError(f"{what} {path} must hold a mapping at the top level")
    return data


REFERENCE_NET, ARCHITECTURE, SPACE = "reference-net", "architecture", "space"


def mapping_kind(data: dict) -> str:
    """What a mapping read from a file holds: the reference code's `net.config`
    (REFERENCE_NET), one of our architecture files or a file holding one as a mapping under
    `arch`, e.g. a training run's config.json (ARCHITECTURE), or else a search space (SPACE).
    The one place where file contents are told apart."""
    if "first_conv" in data:  # a broken net.config still goes to its importer's messages
        return REFERENCE_NET
    if "blocks" in data or "arch" in data:
        return ARCHITECTURE
    return SPACE


def write_mapping_atomic(path: str | Path, data: Any, indent: int = 2) -> Path:
    """Write JSON (or YAML for .yaml/.yml) so that a crash mid-write never leaves a
    half-written file behind: the previous version stays until the new one is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=indent) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_mapping_atomic(path, data)
