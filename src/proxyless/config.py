"""Strict conversion between typed dataclass configs and plain dicts (JSON / YAML).

Unknown keys, missing keys and wrong types are errors that name the field, so a typo in a
config file is caught at load time instead of being silently ignored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import reprlib
import tempfile
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from proxyless.errors import ProxylessError

T = TypeVar("T")

# What a file we read may hold. Spaces, architectures and tables are kilobytes, nest a few
# levels and hold thousands of values; these bounds only stop hostile or broken files (a YAML
# "billion laughs" expands a 300-byte file to 10^9 values) before they exhaust memory or time.
MAX_FILE_BYTES = 8 * 2**20
MAX_YAML_BYTES = 2**20  # parsing YAML takes seconds per MB even with libyaml
MAX_DEPTH = 64
MAX_VALUES = 500_000
MAX_INT_BITS = 63

_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlong, _REPR.maxlevel = 60, 60, 40, 2
_REPR.maxlist = _REPR.maxtuple = 4
_REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 3


def excerpt(value: Any, limit: int = 80) -> str:
    """A short repr of `value` for a message: a file's value may be megabytes long, shared
    many times over (YAML aliases) or huge as a number, and a message stays one short line."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"  # repr() refuses > 4300 digits
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a message must come out whatever the value is
        text = f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def shorten(text: str, limit: int = 80) -> str:
    """Plain `text` on one line, at most `limit` characters (for messages)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clip(value: object, limit: int = 80) -> str:
    """`value` as text of at most `limit` characters: a pasted blob or a very long path must
    not flood the one-line error; the middle goes, since a path's both ends tell the most."""
    text = str(value)
    if len(text) <= limit:
        return text
    half = (limit - 3) // 2
    return f"{text[:half]}...{text[-(limit - 3 - half):]}"


def _child(where: str, name: str) -> str:
    """`where`'s field `name`: dotted inside a field path, after ': ' after a description
    such as 'space file x.json', so the field reads apart from the file name."""
    last = where.rsplit(": ", 1)[-1]
    return f"{where}.{name}" if " " not in last else f"{where}: {name}"


# Seeds are scaled into per-epoch generator seeds (seed * 1_000_003 + epoch, then * 1009 for
# augmentation), which torch must hold in 64 bits, and numpy refuses negative ones: 32 bits.
MAX_SEED = 2**32 - 1


def settings_problem(obj: Any) -> str | None:
    """What no dataclass config may hold: a non-finite number (an inf learning rate or target
    passes `> 0`) or a seed outside 0 ... MAX_SEED. None when there is nothing."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            return f"{field.name} must be a finite number, got {value}"
    seed = getattr(obj, "seed", 0)
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        return f"seed must be a whole number from 0 to {MAX_SEED}, got {excerpt(seed)}"
    return None


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
            raise ProxylessError(f"{where}: expected a list, got {type(value).__name__} "
                                  f"{excerpt(value)}")
        item_hint = args[0] if args else Any
        items = [_convert(v, item_hint, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ProxylessError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ProxylessError(f"{where}: expected true or false, got {excerpt(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ProxylessError(f"{where}: expected an integer, got {excerpt(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProxylessError(f"{where}: expected a number, got {excerpt(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ProxylessError(f"{where}: expected a string, got {excerpt(value)}")
        return value
    return value


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types by name."""
    if not isinstance(data, dict):
        raise ProxylessError(f"{where}: expected a mapping, got {type(data).__name__} "
                             f"{excerpt(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=repr)  # keys of a YAML file may be any type
    if unknown:
        raise ProxylessError(
            f"{where}: unknown key(s) {', '.join(excerpt(k, 40) for k in unknown[:4])}"
            f"{', ...' if len(unknown) > 4 else ''}; "
            f"allowed keys are {', '.join(fields)}"
        )
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], _child(where, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ProxylessError(f"{where}: missing required key {name!r}")
    return cls(**kwargs)


def read_mapping(path: str | Path, what: str = "file") -> dict:
    """Read a JSON or YAML file holding one mapping, with errors that name the file.

    Whatever the file holds, this returns plain data (str, int, float, bool, None, list, dict;
    a tree, not sharing values) within the MAX_* bounds, or raises a one-line ProxylessError.
    """
    path = Path(path)
    label = f"{what} {path}"
    is_json = path.suffix == ".json"
    text = _read_text(path, label, MAX_FILE_BYTES if is_json else MAX_YAML_BYTES)
    data = _plain(_parse(text, is_json, label), label)
    if not isinstance(data, dict):
        raise ProxylessError(f"{label} must hold a mapping at the top level, got "
                             f"{type(data).__name__} {excerpt(data)}")
    return data


def _read_text(path: Path, label: str, limit: int) -> str:
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # a name too long for a path, or holding a NUL
        is_file = False
    if not is_file:
        raise ProxylessError(f"{label} does not exist (or is not a file)")
    try:
        with path.open("rb") as file:
            raw = file.read(limit + 1)
    except OSError as err:
        raise ProxylessError(f"{label} cannot be read ({err.strerror or err})") from None
    if len(raw) > limit:
        kind = "JSON" if limit == MAX_FILE_BYTES else "YAML (larger ones may be JSON)"
        raise ProxylessError(f"{label} is larger than {limit // 2**20} MiB, the most read as "
                             f"{kind}; is it a space, architecture or latency table?")
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark (Windows editors) is harmless
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ProxylessError(f"{label} is not UTF-8 text (byte 0x{raw[err.start]:02x} on line "
                             f"{line}); save it as UTF-8") from None


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict:
    # json and yaml both keep the last of repeated keys silently; a repeated key is a mistake
    data = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


# libyaml's parser where PyYAML has it: ~10x faster on a large file than the pure-Python one,
# which takes ~20 s per MB of some inputs on a loaded 2-core machine. Both nest at most ~1000
# levels and raise RecursionError or YAMLError beyond.
_SAFE_BASE: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _SafeLoader(_SAFE_BASE):
    """yaml.safe_load's loader (the same safe constructors: no Python objects), refusing
    repeated keys in a mapping. Merge keys (`<<: *base`) may still be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            own = [self.construct_object(key, deep=deep) for key, _ in node.value
                   if key.tag != "tag:yaml.org,2002:merge"]
            try:
                _unique_keys([(key, None) for key in own])
            except TypeError:
                pass  # an unhashable key: the base class says so, with its position
        return super().construct_mapping(node, deep=deep)


def _parse(text: str, is_json: bool, label: str) -> Any:
    kind = "JSON" if is_json else "YAML"
    try:
        if is_json:
            return json.loads(text, object_pairs_hook=_unique_keys)
        return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as err:
        raise ProxylessError(f"{label} has the key {excerpt(err.args[0])} twice in one "
                             "mapping; keep one") from None
    except json.JSONDecodeError as err:
        raise ProxylessError(f"{label} is not valid JSON: {err.msg} at line {err.lineno}, "
                             f"column {err.colno}; fix the syntax") from None
    except yaml.YAMLError as err:
        raise ProxylessError(f"{label} is not valid YAML: {_yaml_problem(err)}; fix the "
                             "syntax (or write JSON, which is valid YAML)") from None
    except RecursionError:
        raise ProxylessError(f"{label} nests lists or mappings too deeply to read (at most "
                             f"{MAX_DEPTH} levels)") from None
    except (ValueError, TypeError, OverflowError) as err:  # e.g. a 5000-digit number
        raise ProxylessError(f"{label} is not valid {kind}: {shorten(str(err), 100)}") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line out of PyYAML's multi-line messages: the problem and where it is."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        problem = shorten(err.problem or err.context or "error", 100)
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(err, yaml.reader.ReaderError):
        return (f"character #x{err.character:04x} is not allowed (at character "
                f"{err.position + 1})") if isinstance(err.character, int) else \
            f"a byte that is not text at {err.position + 1}"
    return shorten(str(err), 100)


def _plain(data: Any, label: str) -> Any:
    """A tree copy of parsed `data`, within the MAX_* bounds, with dates as ISO strings.

    YAML aliases make a 300-byte file share one list 10^9 times over (or hold itself): any
    later walk over it (validation, repr in a message) would then run out of memory or stack.
    """
    count = 0
    path: list[str] = []

    def fail(problem: str) -> typing.NoReturn:
        where = "".join(path).lstrip(".") or "the top level"
        if len(where) > 60:  # a path 64 levels deep: its start and its end tell where
            where = f"{where[:30]}...{where[-25:]}"
        raise ProxylessError(f"{label}: {where} {problem}")

    def copy(value: Any) -> Any:
        nonlocal count
        count += 1
        if count > MAX_VALUES:
            fail(f"expands to more than {MAX_VALUES:,} values (YAML aliases repeating each "
                 "other?); write the values out, without aliases")
        if len(path) > MAX_DEPTH:
            fail(f"nests more than {MAX_DEPTH} levels deep (a YAML alias inside itself?)")
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                key = _plain_scalar(key, fail)
                path.append(f".{shorten(key, 40)}")
                out[key] = copy(item)
                path.pop()
            return out
        if isinstance(value, list):
            out_list = []
            for i, item in enumerate(value):
                path.append(f"[{i}]")
                out_list.append(copy(item))
                path.pop()
            return out_list
        return _plain_scalar(value, fail)

    return copy(data)


def _plain_scalar(value: Any, fail: Callable[[str], typing.NoReturn]) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            fail(f"holds an integer too large to be a setting ({excerpt(value)})")
        return value
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()  # an unquoted YAML date: the string it was written as
    fail(f"holds a {type(value).__name__} value {excerpt(value)} (a YAML tag such as !!binary "
         "or !!set?); only strings, numbers, true/false, null, lists and mappings are read")


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


def replace_atomically(path: Path, write: Callable[[typing.BinaryIO], None]) -> None:
    """Write `path` through `write(file)` so that a kill or a power cut mid-write leaves the
    previous version, never half a file: a temporary file of its own (two processes writing
    the same path do not share it), flushed to disk, then renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself reaches the disk with its folder
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def write_mapping_atomic(path: str | Path, data: Any, indent: int = 2) -> Path:
    """Write JSON (or YAML for .yaml/.yml) so that a crash mid-write never leaves a
    half-written file behind: the previous version stays until the new one is complete."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=indent) + "\n"
    replace_atomically(path, lambda f: f.write(text.encode("utf-8")))
    return path


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_mapping_atomic(path, data)
