"""Broken or hostile files: each ends in one short ProxylessError naming the file, the field
and the bad value, never in a traceback, a hang, a huge message or silent acceptance."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from proxyless.cli import main
from proxyless.errors import ProxylessError
from proxyless.latency.table import FORMAT, LatencyTable
from proxyless.model.architecture import decode, load_architecture
from proxyless.model.space import load_space

REFERENCE = Path(str(resources.files("proxyless") / "reference"))
KEY = "Conv-input:28x28x1-output:14x14x16"


def error_of(load: Callable[[Path], Any], path: Path, *parts: str) -> str:
    """The message `load(path)` fails with: one line, short, naming the file and `parts`."""
    with pytest.raises(ProxylessError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message[:500]
    assert path.name in message, message
    for part in parts:
        assert part in message, message
    return message


def write(path: Path, data: Any) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


def changed(data: dict, keys: list, value: Any) -> dict:
    data = copy.deepcopy(data)
    holder = data
    for key in keys[:-1]:
        holder = holder[key]
    holder[keys[-1]] = value
    return data


def laughs(levels: int = 9) -> bytes:
    """~300 bytes of YAML whose `name` expands to 9^9 strings (the "billion laughs")."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return ("\n".join(lines) + f"\nname: *a{levels - 1}\n").encode()


def space_dict() -> dict:
    return load_space("fashion").to_dict()


def table_dict() -> dict:
    return {"format": FORMAT, "calibration": None,
            "meta": {"backend": "torch", "device": "cpu", "threads": 1, "batch": 1,
                     "space": "fashion"},
            "entries": {KEY: {"ms": 0.1, "spread": 0.01, "count": 5}}}


# -- 1. the mapping-file loaders (every space, architecture and table file) --------------
@pytest.mark.parametrize("name, content, parts", [
    ("s.yaml", b"name: caf\xe9\n", ["not UTF-8", "line 1"]),
    ("s.json", b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", ["nest"]),
    ("s.yaml", b"name: " + b"[" * 100_000 + b"]" * 100_000, ["nest"]),
    ("s.yaml", b"name:\n" + b"- " * 2000 + b"x\n", ["nest"]),
    ("s.json", b'{"name": ' + b"[" * 900 + b"]" * 900 + b"}", ["name[0]", "64 levels"]),
    ("s.yaml", b"name: x\nstages: &s [*s]\n", ["stages[0]", "64 levels"]),
    ("s.yaml", laughs(), ["expands to more than", "aliases"]),
    ("s.yaml", b"name: fashion\nstages: [unclosed\ninput_size: 3\n", ["line 3, column 11"]),
    ("s.yaml", b"name: x\n  input_size: 3\n", ["line 2, column 13"]),
    ("s.yaml", b"name: x\x00\n", ["#x0000"]),
    ("s.yaml", b"name: x\n---\nname: y\n", ["another document"]),
    ("s.yaml", b"name: x\nname: y\n", ["'name' twice"]),
    ("s.json", b'{"name": "x", "name": "y"}', ["'name' twice"]),
    ("s.json", b'{"input_size": ' + b"9" * 5000 + b"}", ["4300 digits"]),
    ("s.yaml", b"input_size: 0x" + b"f" * 100 + b"\n", ["input_size", "too large"]),
    ("s.yaml", b"name: !!binary aGVsbG8=\n", ["name", "bytes", "!!binary"]),
    ("s.yaml", b"name: !!set {a, b}\n", ["name", "set"]),
    ("s.yaml", b"- a list\n", ["mapping at the top level"]),
    ("s.json", b" " * (9 * 2**20), ["larger than 8 MiB"]),
    ("s.yaml", b"a: [" + b"1, " * 2**20 + b"]", ["larger than 1 MiB", "JSON"]),
])
def test_a_broken_mapping_file_is_one_short_line(tmp_path, name, content, parts):
    error_of(load_space, write(tmp_path / name, content), *parts)


def test_a_yaml_tag_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran.txt"
    path = write(tmp_path / "s.yaml", f"name: !!python/object/apply:os.system ['touch {marker}']"
                 .encode())
    error_of(load_space, path, "python/object/apply", "line 1")
    assert not marker.exists()


def test_a_huge_value_is_quoted_as_an_excerpt(tmp_path):
    path = write(tmp_path / "s.json", changed(space_dict(), ["stages"], "s" * 1_000_000))
    assert "sss..." in error_of(load_space, path, "stages", "expected a list")
    path = write(tmp_path / "a.json", {"space": "fashion", "blocks": ["q" * 1_000_000]})
    error_of(load_architecture, path, "block 0", "unknown op token 'qqq")


def test_the_command_line_prints_one_line(tmp_path, capsys):
    path = write(tmp_path / "bomb.yaml", laughs())
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("proxyless: error: ") and err.count("\n") == 1 and len(err) < 300


# -- 2. latency tables -----------------------------------------------------------------------
@pytest.mark.parametrize("keys, value, parts", [
    (["entries"], [1, 2], ["entries must be a mapping", "[1, 2]"]),
    (["meta"], "cpu", ["meta must be a mapping", "'cpu'"]),
    (["calibration"], "yes", ["calibration must be a mapping", "'yes'"]),
    (["calibration"], {"offset": 0.1, "scales": [1]}, ["calibration.scales"]),
    (["calibration"], {"offset": math.nan}, ["calibration.offset", "nan"]),
    (["meta", "threads"], "four", ["meta.threads", "'four'"]),
    (["meta", "batch"], 0, ["meta.batch", "got 0"]),
    (["meta", "space"], "/etc/hostname", ["meta.space", "preset"]),
    (["meta", "space"], {"name": "x"}, ["meta.space", "input_size"]),
    (["entries", KEY, "ms"], math.nan, [KEY, ".ms", "finite", "nan"]),
    (["entries", KEY, "ms"], math.inf, [KEY, ".ms", "finite", "inf"]),
    (["entries", KEY, "ms"], -1.5, [KEY, ".ms", "-1.5"]),
    (["entries", KEY, "ms"], 1e300, [KEY, ".ms", "1e+300"]),
    (["meta", "threads"], 1e300, ["meta.threads", "1e+300"]),
    (["entries", KEY, "ms"], "fast", [KEY, ".ms", "'fast'"]),
    (["entries", KEY, "ms"], True, [KEY, ".ms", "True"]),
    (["entries", KEY, "spread"], -0.1, [KEY, ".spread"]),
    (["entries", KEY, "count"], 2.5, [KEY, ".count", "2.5"]),
    (["entries", KEY], 3, [KEY, "must be a mapping"]),
    (["entries", KEY], {"mss": 1.0}, [KEY, "'mss'"]),
    (["format"], "proxyless-latency/2", ["'proxyless-latency/2'", "not a latency table"]),
    (["extra"], 1, ["unknown key", "'extra'"]),
])
def test_a_bad_table_field_is_named_at_load(tmp_path, keys, value, parts):
    error_of(LatencyTable.load, write(tmp_path / "t.json", changed(table_dict(), keys, value)),
             *parts)


@pytest.mark.parametrize("text, parts", [
    ("Conv-x:\n  mean: 1.0\n  var: -1\n", ["'Conv-x'", "var", "-1"]),
    ("Conv-x:\n  mean: .nan\n", ["'Conv-x'", "mean", "nan"]),
    ("Conv-x:\n  mean: -2\n", ["'Conv-x'", "mean", "-2"]),
    ("Conv-x:\n  mean: 1\nConv-y: fast\n", ["'Conv-y'", "must be a mapping"]),
])
def test_a_bad_reference_table_entry_is_named(tmp_path, text, parts):
    error_of(LatencyTable.load, write(tmp_path / "r.yaml", text.encode()), *parts)


def test_a_good_table_still_loads(tmp_path):
    table = LatencyTable.load(write(tmp_path / "t.json", table_dict()))
    assert table.entries[KEY].ms == 0.1 and table.space.name == "fashion"
    assert len(LatencyTable.load(REFERENCE / "mobile_trim.yaml").entries) > 50


# -- 3. search spaces ------------------------------------------------------------------------
@pytest.mark.parametrize("keys, value, parts", [
    (["stages", 0, "width"], -8, ["stages[0].width", "-8"]),
    (["stages", 0, "stride"], 0, ["stages[0].stride", "1 or 2", "got 0"]),
    (["stages", 1, "depth"], "4", ["stages[1].depth", "expected an integer", "'4'"]),
    (["stages", 1, "depth"], True, ["stages[1].depth", "True"]),
    (["stages", 1, "depth"], 10**9, ["stages[1].depth", "1000000000"]),
    (["stages", 0, "width"], 10**12, ["stages[0].width"]),
    (["stem", "channels"], 0, ["stem.channels", "got 0"]),
    (["stem", "kernel"], 4, ["stem.kernel", "odd"]),
    (["first_block", "kernel"], 10**9 + 1, ["first_block.kernel", "odd"]),
    (["width_mult"], 1e300, ["width_mult", "1e+300"]),
    (["width_mult"], True, ["width_mult", "True"]),
    (["num_classes"], 2.5, ["num_classes", "2.5"]),
    (["feature_mix"], None, ["feature_mix", "None"]),
    (["name"], "n" * 1000, ["name", "100 characters"]),
    (["name"], 0, ["name", "expected a string"]),
    (["candidates"], "k3e6", ["candidates", "expected a list"]),
    (["candidates"], ["k3e6"] * 1000, ["candidates has duplicates: ['k3e6']"]),
    (["stages"], {"a": 1}, ["stages", "expected a list"]),
    (["stages", 0], [24, 4, 2], ["stages[0]", "expected a mapping"]),
])
def test_a_bad_space_field_is_named(tmp_path, keys, value, parts):
    path = write(tmp_path / "space.json", changed(space_dict(), keys, value))
    message = error_of(load_space, path, *parts)
    assert "shortcut" not in message


# -- 4. architecture strings and files, and the reference net.config ---------------------------
@pytest.mark.parametrize("text, part", [
    ("q" * 1_000_000, "unknown op token 'qqq"),
    ("k3e6 " * 1_000_000, "1000000 blocks"),
    ("|||||", "stage 0 of the encoded architecture has 0 blocks"),
    ("||||||", "7 stages"),
    ("", "0 blocks"),
    ("k3e6\x00" * 13, "unknown op token"),
])
def test_any_architecture_string_decodes_or_is_named(text, part):
    with pytest.raises(ProxylessError, match=part) as info:
        decode(load_space("fashion"), text)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("data, parts", [
    ({"space": "fashion", "blocks": ["k3e6"] * 3 + [7] + ["k3e6"] * 9}, ["blocks[3]", "got 7"]),
    ({"space": [1, 2], "blocks": []}, ["space", "[1, 2]"]),
    ({"space": "/etc/hostname", "blocks": []}, ["space", "preset", "/etc/hostname"]),
    ({"space": "fashion", "blocks": ["k3e6"] * 13, "format": list(range(10**5))},
     ["unsupported format", "[0, 1, 2, 3, ...]"]),
    ({"space": "fashion", "blocks": ["k3e6"] * 13, "encoding": "k5e6"}, ["'encoding'"]),
    ({"space": "fashion", "blocks": ["zero"] * 13}, ["block 0", "'zero'"]),
    ({"space": changed(space_dict(), ["stages", 0, "stride"], 3), "blocks": []},
     ["space", "stages[0].stride"]),
])
def test_a_bad_architecture_file_is_named(tmp_path, data, parts):
    error_of(load_architecture, write(tmp_path / "arch.json", data), *parts)


@pytest.mark.parametrize("keys, value, parts", [
    (["blocks", 2, "mobile_inverted_conv", "stride"], 0, ["blocks[2]", "stride", "got 0"]),
    (["blocks", 1, "mobile_inverted_conv", "out_channels"], -24, ["blocks[1]", "out_channels"]),
    (["blocks", 2, "mobile_inverted_conv", "kernel_size"], 4, ["blocks[2]", "kernel_size"]),
    (["blocks", 2, "mobile_inverted_conv", "expand_ratio"], math.nan, ["expand_ratio"]),
    (["blocks", 2, "mobile_inverted_conv"], [1], ["blocks[2].mobile_inverted_conv", "[1]"]),
    (["blocks", 0, "mobile_inverted_conv"], "x", ["blocks[0].mobile_inverted_conv"]),
    (["first_conv"], "conv", ["first_conv", "expected a mapping"]),
    (["classifier", "out_features"], 0, ["classifier", "out_features", "got 0"]),
])
def test_a_bad_reference_config_names_the_field_not_a_mismatch(tmp_path, keys, value, parts):
    config = json.loads((REFERENCE / "proxyless_cpu.config").read_text())
    path = tmp_path / "net.config"
    path.write_text(json.dumps(changed(config, keys, value)))
    message = error_of(load_architecture, path, *parts)
    assert "shortcut" not in message and "previous block" not in message
