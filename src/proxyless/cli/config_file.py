"""Runs as config files: every `search`, `train` and `run` folder holds the command's resolved
options as `config.yaml`, and `--config FILE` takes such a file back (options given on the
command line win):

    proxyless run --config runs/a/config.yaml --out runs/b       # run a again, into b
    proxyless run --config runs/a/config.yaml --out runs/c --seed 1

The file is the command's options after everything a command fills in before it reads any
data (the defaults, `--budget`'s settings, the profile's runtime and batch), so it reads as
what the run did; what only the data decides (`--budget`'s epochs, scaled to the training
set) stays null and is decided again the same way. `--print-config` prints the very same text
and exits, touching neither data nor run folder:

    proxyless run --budget standard --print-config > standard.yaml

`out`, `resume`, `config`, `print_config` and `no_progress` are not part of it. A hand-written
file may also be a flat mapping of options. Unknown keys, wrong types and values out of range
are errors naming the key, checked by the very option types the command line uses.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

import yaml

from proxyless.config_io import excerpt, shorten
from proxyless.engine.run_lock import LOCK_FILE
from proxyless.errors import ProxylessError
from proxyless.files import read_mapping, replace_atomically

CONFIG_FILE = "config.yaml"
NOT_SAVED = {"command", "config", "print_config", "out", "resume", "no_progress", "help"}
_NOT_GIVEN = object()
# switches whose file key was the negative option's before 2026-12-07 (`no_augment: true`):
# now the setting's own name (`augment: false`), as in config.json
OLD_SWITCHES = {"no_augment": "augment", "no_tensorboard": "tensorboard"}


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser = parser.add_argument_group("configuration")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help=f"take the options from FILE (a run folder's {CONFIG_FILE}, or a "
                             "YAML mapping of option names); options given here win")
    parser.add_argument("--print-config", action="store_true",
                        help=f"print the options as this command resolves them (defaults, "
                             f"--budget, --config, the options given) as the YAML that "
                             f"--config reads, and exit; the run folder's {CONFIG_FILE} is "
                             "this text")


def config_text(args: argparse.Namespace) -> str:
    """The command and its resolved options as YAML (what `--config` reads back); a null
    carries a comment saying what decides it."""
    lines = [f"# proxyless {args.command}: the options as resolved (defaults, --budget, "
             "--config, the options given)",
             f"# again: proxyless {args.command} --config THIS_FILE --out DIR",
             yaml.safe_dump({"command": args.command}).rstrip(), "options:"]
    for key, value in vars(args).items():
        if key in NOT_SAVED:
            continue
        value = list(value) if isinstance(value, tuple) else value
        # a one-item flow list is the value on one line however it is quoted: [x] -> x
        shown = yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()[1:-1]
        line = f"  {key}: {shown}"
        if value is None and key in NULL_MEANS:
            meaning = NULL_MEANS[key]
            line += "  # " + (meaning.get(args.command, meaning[""])
                              if isinstance(meaning, dict) else meaning)
        lines.append(line)
    return "\n".join(lines) + "\n"


# what an option left null in config.yaml means: decided when the command runs
NULL_MEANS: dict[str, str | dict[str, str]] = {
    "warmup_epochs": "from --budget, scaled to the training set's size",
    "epochs": "from --budget, scaled to the training set's size",
    "retrain_epochs": "from --budget, scaled to the training set's size",
    "target_ms": {"run": "chosen from the latency table's range", "": "no latency target"},
    "target_mflops": "no multiply-add target",
    "table": "this device's, profiled (or cached)",
    "from_search": "a new search (no trained supernet re-targeted)",
    "warmup_lr": "the learning rate (lr)",
    "train_limit": "every training image, each epoch",
    "data": "full Fashion-MNIST if installed, else the built-in subset",
    "data_dir": "the data set's usual places",
    "val_size": {"train": "none held out", "": "0.1 of the training split"},
    "threads": "torch's default for this machine",
    "workers": "the cores available, less one",
    "arch": "not given: the command needs an architecture file",
    "init_from": "from scratch (the authors' he_fout initialisation)",
}


def print_config(args: argparse.Namespace) -> int:
    """`--print-config`: the resolved options on stdout; exit code 0."""
    sys.stdout.write(config_text(args))
    return 0


def save_config(out: str | Path, args: argparse.Namespace) -> None:
    """Write `out/config.yaml` (`config_text`, what `--print-config` prints) when the folder
    holds nothing else yet: a folder with a run in it (resumed, or refused) keeps its own."""
    out = Path(out)
    if out.is_dir() and any(p.name not in (CONFIG_FILE, LOCK_FILE) for p in out.iterdir()):
        return
    text = config_text(args)
    out.mkdir(parents=True, exist_ok=True)
    replace_atomically(out / CONFIG_FILE, lambda f: f.write(text.encode("utf-8")))


def resolved_options(args: argparse.Namespace, config: Any) -> argparse.Namespace:
    """`args` with the options left unset (None) replaced by `config`'s value of the same
    name, where it has one: the file then says what ran (lr 0.05), not "the default"."""
    resolved = argparse.Namespace(**vars(args))
    for key, value in vars(args).items():
        if value is None and getattr(config, key, None) is not None:
            setattr(resolved, key, getattr(config, key))
    return resolved


def apply_config(parser: argparse.ArgumentParser, argv: list[str] | None,
                 args: argparse.Namespace) -> argparse.Namespace:
    """`args` with every option of `args.config` that the command line did not give."""
    if getattr(args, "config", None) is None:
        return args
    path = args.config
    data = read_mapping(path, "config file")
    options = data.get("options", data) if "options" in data or "command" in data else data
    command = data.get("command", args.command)
    if command != args.command:
        shown = command if isinstance(command, str) else excerpt(command, 30)
        raise ProxylessError(f"config file {path} is for `proxyless {shorten(shown, 30)}`, "
                             f"not `proxyless {args.command}`")
    if not isinstance(options, dict):
        raise ProxylessError(f"config file {path}: options must be a mapping of option names")
    sub = _subparser(parser, args.command)
    actions = {a.dest: a for a in sub._actions if a.dest not in NOT_SAVED}
    given = _given(parser, sub, argv)
    for key, value in options.items():
        if key in OLD_SWITCHES and isinstance(value, bool):  # a file of an earlier version
            key, value = OLD_SWITCHES[key], not value
        if key not in actions:
            close = difflib.get_close_matches(str(key), list(actions), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ProxylessError(f"config file {path}: unknown option {excerpt(key, 40)} for "
                                 f"`proxyless {args.command}`{hint}")
        if key not in given:
            setattr(args, key, _convert(value, actions[key], f"config file {path}: {key}"))
    return args


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise AssertionError("the parser has no subcommands")


def _given(parser: argparse.ArgumentParser, sub: argparse.ArgumentParser,
           argv: list[str] | None) -> set[str]:
    """The options given on the command line: parsed again with every default a marker."""
    defaults = {a.dest: a.default for a in sub._actions if a.dest != "help"}
    sub.set_defaults(**{dest: _NOT_GIVEN for dest in defaults})
    try:
        probe = parser.parse_args(argv)
    finally:
        sub.set_defaults(**defaults)
    return {key for key, value in vars(probe).items() if value is not _NOT_GIVEN}


def _convert(value: Any, action: argparse.Action, where: str) -> Any:
    """`value` from a file as the command line would have parsed it (or a clear error)."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                           argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise ProxylessError(f"{where}: expected true or false, got {excerpt(value)}")
        return value
    if value is None:
        if action.default is None:
            return None
        raise ProxylessError(f"{where}: must not be empty (null)")
    if action.nargs not in (None, "?"):
        if not isinstance(value, list):
            raise ProxylessError(f"{where}: expected a list, got {excerpt(value)}")
        count = action.nargs if isinstance(action.nargs, int) else None
        if count is not None and len(value) != count:
            raise ProxylessError(f"{where}: expected {count} values, got {len(value)}")
        return [_scalar(item, action, where) for item in value]
    return _scalar(value, action, where)


def _scalar(value: Any, action: argparse.Action, where: str) -> Any:
    if isinstance(value, (dict, list, bool)):
        raise ProxylessError(f"{where}: expected a single value, got {excerpt(value)}")
    converted = value
    if action.type is not None:
        try:
            converted = action.type(str(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as err:
            raise ProxylessError(f"{where}: {excerpt(value)} is not valid "
                                 f"({str(err) or type(err).__name__})") from None
    elif not isinstance(value, str):
        converted = str(value)
    if action.choices is not None and converted not in action.choices:
        raise ProxylessError(f"{where}: {excerpt(value)} is not one of "
                             f"{', '.join(map(str, action.choices))}")
    return converted
