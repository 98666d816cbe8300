"""Command-line options made from the config classes' declarations (`config_io.setting`),
and read back into them: a setting's option name, value check, choices, default and help
come from its one declaration, so no command lists its options' types or maps them to
config fields by hand.

    add_settings(group, TrainConfig, ("epochs", "lr", "augment"))   # --augment/--no-augment too
    TrainConfig(**settings_from_args(TrainConfig, args))
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any

from proxyless.cli.options import (
    bounded_number,
    finite_float,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    seed_int,
    threads_int,
)
from proxyless.config_io import MAX_SEED, bounds_text, setting_option
from proxyless.engine.runtime import RuntimeConfig


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {field.name: field for field in dataclasses.fields(cls)}


def option_dest(field: dataclasses.Field) -> str | None:
    """Where argparse keeps the field's option (`--reward` -> `reward`); None for a setting
    without an option of its own (the library's only, or shared as `--target-ms / ...`)."""
    option = setting_option(field)
    if option is None or " " in option:
        return None
    return option[2:].replace("-", "_")


def _base_type(cls: type, name: str) -> Any:
    hint = typing.get_type_hints(cls)[name]
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return args[0] if args and typing.get_origin(hint) is not None else hint


# the option types whose messages the command line has always printed, by declaration
_KNOWN_TYPES: dict[tuple[type, tuple[tuple[str, float], ...]], Callable[[str], Any]] = {
    (int, (("at_least", 1),)): positive_int,
    (int, (("at_least", 0),)): nonneg_int,
    (int, (("at_least", 0), ("at_most", MAX_SEED))): seed_int,
    (float, (("above", 0),)): positive_float,
    (float, (("at_least", 0),)): nonneg_float,
    (float, ()): finite_float,
}


def value_type(cls: type, field: dataclasses.Field) -> Callable[[str], Any] | None:
    """The option type that parses and range-checks the field's value in one line; None
    where argparse's own choices or a flag do it. An upper bound `below` is left to the
    config's validation, which names it."""
    kind = _base_type(cls, field.name)
    if kind not in (int, float) or "choices" in field.metadata:
        return None
    bounds = tuple((key, field.metadata[key]) for key in ("at_least", "above", "at_most")
                   if key in field.metadata)
    if (kind, bounds) in _KNOWN_TYPES:
        return _KNOWN_TYPES[(kind, bounds)]
    meta = dict(bounds)
    low, high = meta.get("at_least", meta.get("above")), meta.get("at_most")
    what = f"{'a whole number' if kind is int else 'a finite number'} {bounds_text(meta)}"
    return lambda text: bounded_number(text, kind, low, high, "above" in meta, what)


def _help(field: dataclasses.Field, default: Any, note: str) -> str:
    text = field.metadata.get("help", "")
    if note:  # it says the default, in place of a "(default: ...)" of the declaration
        head, said, _ = text.rpartition(" (default")
        return (head if said else text) + note
    if isinstance(default, bool):  # a switch: --x / --no-x where it is on by default
        return f"{text} (default: on)" if default else text
    if default is None or "default" in text:
        return text
    return f"{text} (default {default:g})" if isinstance(default, float) else \
        f"{text} (default {default})"


def add_settings(group: Any, cls: type, names: Iterable[str],
                 defaults: dict[str, Any] | None = None, notes: dict[str, str] | None = None,
                 extra: dict[str, dict[str, Any]] | None = None, prefix: str = "") -> None:
    """Add the options of `cls`'s settings `names` to an argparse parser or group: each as
    declared, with `defaults` and `notes` (appended to the help, e.g. where `--budget`
    decides) where given, `extra` argparse keywords per setting (a type whose check only
    the command line makes, a metavar, `aliases`: more option names), and `prefix` before
    every option's name (`profile-`: `--profile-backend` sets `ProfileSetting.backend`)."""
    fields, hints = _fields(cls), typing.get_type_hints(cls)
    defaults, notes, extra = defaults or {}, notes or {}, extra or {}
    for name in names:
        field = fields[name]
        default = defaults.get(name, field.default)
        kwargs: dict[str, Any] = {"default": default,
                                  "help": _help(field, default, notes.get(name, ""))}
        if hints[name] is bool:
            # on by default, or left for --budget to decide (None): --x and --no-x
            kwargs["action"] = (argparse.BooleanOptionalAction if default or default is None
                                else "store_true")
        else:
            kind = value_type(cls, field)
            if kind is not None:
                kwargs["type"] = kind
            if "choices" in field.metadata:
                kwargs["choices"] = field.metadata["choices"]
        more = dict(extra.get(name, {}))
        options = ["--" + prefix + setting_option(field)[2:], *more.pop("aliases", ())]
        group.add_argument(*options, **{**kwargs, **more})


def settings_from_args(cls: type, args: argparse.Namespace,
                       prefix: str = "") -> dict[str, Any]:
    """The fields of `cls` that this command line has options for (under `prefix`, as
    `add_settings` made them), read from `args` by their declarations; a None is left out
    where the field's default is not None (an option that something later fills, such as
    `--budget`)."""
    values, under = {}, prefix.replace("-", "_")
    for field in dataclasses.fields(cls):
        dest = option_dest(field)
        if dest is None or not hasattr(args, under + dest):
            continue
        value = getattr(args, under + dest)
        if value is None and field.default is not None:
            continue
        values[field.name] = value
    return values


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    """The runtime settings (`RuntimeConfig`) of every command that trains, and
    --no-progress; --workers is the data group's."""
    group = parser.add_argument_group(
        "runtime", "where and how it runs; all but --seed may change on --resume")
    add_settings(group, RuntimeConfig, ("device", "threads", "precision", "seed"),
                 extra={"threads": {"type": threads_int}})
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_settings(group, RuntimeConfig, ("tensorboard", "log_every", "checkpoint_every"),
                 extra={"log_every": {"metavar": "STEPS"},
                        "checkpoint_every": {"metavar": "MINUTES"}})
