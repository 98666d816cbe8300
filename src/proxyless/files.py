"""Files we read and write: mappings (JSON / YAML) read safely from files that may be
hostile, and files written atomically, so that a kill mid-write leaves the previous version.

Reading refuses what could run code or exhaust memory or time: YAML through the safe loader
only, at most `MAX_FILE_BYTES` (YAML `MAX_YAML_BYTES`), `MAX_DEPTH` levels and `MAX_VALUES`
values once aliases are expanded, no duplicate keys, UTF-8 only; what comes out is plain data
(strings, numbers, booleans, None, lists and dicts).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import resource
import shutil
import tempfile
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from proxyless.config_io import excerpt, shorten
from proxyless.errors import ProxylessError

# What a file we read may hold. Spaces, architectures and tables are kilobytes, nest a few
# levels and hold thousands of values; these bounds only stop hostile or broken files (a YAML
# "billion laughs" expands a 300-byte file to 10^9 values) before they exhaust memory or time.
MAX_FILE_BYTES = 8 * 2**20
MAX_YAML_BYTES = 2**20  # parsing YAML takes seconds per MB even with libyaml
MAX_DEPTH = 64
MAX_VALUES = 500_000
MAX_INT_BITS = 63


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
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        cause = no_room_cause(err)
        if cause is not None:
            raise ProxylessError(_no_room(path, cause, write)) from None
        raise
    with contextlib.suppress(OSError):  # the rename itself reaches the disk with its folder
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


# a full disk, a full quota, a file-size limit (ulimit -f, RLIMIT_FSIZE)
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def no_room_cause(err: BaseException) -> OSError | None:
    """The full-disk (or file-size limit) OSError behind `err`, however a writer wrapped it:
    torch.save's zip writer, say, raises a RuntimeError ("unexpected pos") while the OSError
    is being handled, so it is only in the chain of causes and contexts."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _NO_ROOM:
            return err
        err = err.__cause__ or err.__context__
    return None


class _ByteCounter:
    """A file that only counts what is written to it: the size a failed write needed."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, data) -> int:
        self.count += memoryview(data).nbytes
        return memoryview(data).nbytes

    def flush(self) -> None:
        pass


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError  # unreachable


def _no_room(path: Path, err: OSError, write: Callable[[typing.BinaryIO], None]) -> str:
    """One line: which file, how much it needed, what there is, that nothing was lost."""
    counter = _ByteCounter()
    try:
        write(counter)  # type: ignore[arg-type]  # what the file would have held
        needed = f"{_size(counter.count)} needed"
    except Exception:  # noqa: BLE001 - the size is a courtesy; the message must come out
        counter.count, needed = -1, "its size unknown"
    if err.errno == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit == resource.RLIM_INFINITY:
            room = "the largest file this file system holds"
        elif _size(limit) == _size(counter.count):  # the same when rounded: say it exactly
            needed = f"{counter.count:,} bytes needed"
            room = f"the file-size limit (ulimit -f) of {limit:,} bytes"
        else:
            room = f"the file-size limit (ulimit -f) of {_size(limit)}"
        fix = "raise the limit"
    else:
        try:
            room = f"{_size(shutil.disk_usage(path.parent).free)} free in {path.parent}"
        except OSError:
            room = f"no space left in {path.parent}"
        fix = "free some space (or choose another --out)"
    kept = (f"the previous {path.name} is intact" if path.exists()
            else f"no {path.name} was written")
    return (f"no space left to write {path} ({needed}, {room}; "
            f"{errno.errorcode.get(err.errno, err.errno)}); {kept}: "
            f"{fix}, then run the command again (with --resume where it takes one: it goes on "
            "from the last good checkpoint)")


def append_text(path: Path, text: str) -> None:
    """Append `text` to `path` (a log such as metrics.jsonl); a full disk is one clear line,
    and what the file held before stays."""
    try:
        with open(path, "a") as f:
            f.write(text)
    except OSError as err:
        if err.errno in _NO_ROOM:
            raise ProxylessError(_no_room(path, err, lambda f: f.write(text.encode()))) from None
        raise


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


def cache_dir() -> Path:
    """Where work worth keeping between runs lives (latency tables, image-folder indexes):
    $PROXYLESS_CACHE, else $XDG_CACHE_HOME/proxyless, else ~/.cache/proxyless."""
    if os.environ.get("PROXYLESS_CACHE"):
        return Path(os.environ["PROXYLESS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "proxyless"
