"""Strict conversion between typed dataclass configs and plain dicts (JSON / YAML), and the
short excerpts of values that every message quotes (`excerpt`, `shorten`, `clip`).

Unknown keys, missing keys and wrong types are errors that name the field, so a typo in a
config file is caught at load time instead of being silently ignored. Reading and writing the
files themselves is `files.py`'s.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from typing import Any, TypeVar

from proxyless.errors import ProxylessError

T = TypeVar("T")

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
    passes `> 0`), a seed outside 0 ... MAX_SEED, or a value outside what its `setting`
    declares (`declared_problem`). None when there is nothing."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            return f"{field.name} must be a finite number, got {value}"
    seed = getattr(obj, "seed", 0)
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        return f"seed must be a whole number from 0 to {MAX_SEED}, got {excerpt(seed)}"
    return declared_problem(obj)


_OPTION = object()  # `setting`'s option not given: `--` and the field's name, hyphenated


def number_text(value: float) -> str:
    """A bound as a message says it: 4294967295, not 4.29497e+09; 0.5, not 0.50000."""
    return str(value) if isinstance(value, int) else f"{value:g}"


_BOUNDS = (("at_least", ">="), ("above", ">"), ("at_most", "<="), ("below", "<"))


def bounds_text(bounds: dict[str, float]) -> str:
    """A range as messages say it: ">= 0, <= 3600" (`setting`'s keywords to their signs)."""
    return ", ".join(f"{sign} {number_text(bounds[key])}" for key, sign in _BOUNDS
                     if key in bounds)


def setting(default: Any, help: str, option: str | None = _OPTION,  # noqa: A002
            **values: Any) -> Any:
    """A config field declared once: its default, one line of help, the values it may take
    (`choices=(...)`, or a range: `at_least`, `above`, `at_most`, `below`; None passes where
    the default is None) and the command-line option that sets it (default `--field-name`;
    None: the library only). `declared_problem` checks the values, `cli/settings.py` makes
    the option from the declaration, and the configuration reference
    (`docs/configuration.md`, `cli/reference.py`) lists it."""
    unknown = set(values) - {"choices", *(key for key, _ in _BOUNDS)}
    if unknown:
        raise TypeError(f"setting(): unknown keyword(s) {sorted(unknown)}")
    metadata: dict[str, Any] = {"help": help, **values}
    if option is not _OPTION:
        metadata["option"] = option
    return dataclasses.field(default=default, metadata=metadata)


def setting_option(field: dataclasses.Field) -> str | None:
    """The command-line option of a field declared with `setting`."""
    return field.metadata.get("option", "--" + field.name.replace("_", "-"))


def declared_range(field: dataclasses.Field) -> str | None:
    """The values a `setting` may take, as the configuration reference and messages say
    them ("> 0", ">= 1, <= 4294967295", "one of a, b"), or None where any value goes."""
    meta = field.metadata
    if "choices" in meta:
        return "one of " + ", ".join(map(str, meta["choices"]))
    return bounds_text(meta) or None


def _outside(field: dataclasses.Field, value: Any) -> bool:
    meta = field.metadata
    if "choices" in meta:
        return value not in meta["choices"]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False  # a wrong type is from_dict's to refuse
    return (("at_least" in meta and not value >= meta["at_least"])
            or ("above" in meta and not value > meta["above"])
            or ("at_most" in meta and not value <= meta["at_most"])
            or ("below" in meta and not value < meta["below"]))


def declared_problem(obj: Any) -> str | None:
    """The first field of dataclass `obj` outside the values its `setting` declares, as
    "threads must be >= 1, got 0", or None."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if value is None and field.default is None:
            continue
        if _outside(field, value):
            return f"{field.name} must be {declared_range(field)}, got {excerpt(value)}"
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


def current_names(cls: type, data: Any) -> Any:
    """`data` (a mapping of `cls`'s fields) with the names of earlier versions replaced by
    today's (`cls.RENAMED`, old -> new): run folders and checkpoints written before a rename
    still load and resume. Today's name wins where a file somehow holds both."""
    renamed = getattr(cls, "RENAMED", {})
    if not isinstance(data, dict) or not renamed:
        return data
    current = {renamed.get(key, key): value for key, value in data.items()
               if key not in renamed or renamed[key] not in data}
    return current


def result_from_dict(cls: type[T], data: Any, path: Any, required: tuple[str, ...]) -> T:
    """A results file's dataclass (summary.json, final.json, results.json) from its mapping:
    keys of later versions ignored; one lacking a `required` key is damaged or from another
    version, and the error says to remove it (a resumed run then redoes that step)."""
    missing = [key for key in required if isinstance(data, dict) and key not in data]
    if missing:
        raise ProxylessError(f"saved result {path} lacks {', '.join(missing)} (damaged or "
                             "from another version); remove it to redo that step with "
                             "--resume")
    return from_dict(cls, data, f"saved result {path}", unknown="ignore")


def from_dict(cls: type[T], data: Any, where: str = "config", unknown: str = "error") -> T:
    """Build dataclass `cls` from `data`, rejecting wrong types by name, and unknown keys
    (`unknown="ignore"`: dropped, for results files that later versions may add keys to)."""
    if not isinstance(data, dict):
        raise ProxylessError(f"{where}: expected a mapping, got {type(data).__name__} "
                             f"{excerpt(data)}")
    data = current_names(cls, data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    extra = sorted(set(data) - set(fields), key=repr)  # keys of a YAML file may be any type
    if unknown == "ignore":
        data, extra = {k: v for k, v in data.items() if k in fields}, []
    if extra:
        raise ProxylessError(
            f"{where}: unknown key(s) {', '.join(excerpt(k, 40) for k in extra[:4])}"
            f"{', ...' if len(extra) > 4 else ''}; "
            f"allowed keys are {', '.join(fields)}"
        )
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], _child(where, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ProxylessError(f"{where}: missing required key {name!r}")
    return cls(**kwargs)
