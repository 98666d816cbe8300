"""Property-based: whatever a file or string holds, the loaders give a valid object or one short
ProxylessError, nothing else (no other exception, no hang, no multi-line or huge message)."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxyless.errors import ProxylessError
from proxyless.latency.table import FORMAT, LatencyTable
from proxyless.model.architecture import Architecture, decode, encode, load_architecture
from proxyless.model.space import SearchSpace, load_space

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(FAST, max_examples=60)  # loaders that parse a whole space per example
REFERENCE = Path(str(resources.files("proxyless") / "reference"))
FASHION = load_space("fashion")
SPACE = FASHION.to_dict()
ARCH = Architecture.uniform(FASHION, "k5e3").to_dict()
TABLE = {"format": FORMAT,
         "meta": {"backend": "torch", "device": "cpu", "threads": 1, "batch": 1, "warmup": 0,
                  "repeats": 3, "min_time": 0.0, "anchor_ms": 1.5, "space": "fashion"},
         "calibration": {"offset": 0.1, "scales": {"fixed": 1.0, "k3": 0.9}, "fit": {}},
         "entries": {"Conv-input:28x28x1-output:14x14x16": {"ms": 0.1, "spread": 0.0,
                                                            "count": 5},
                     "Logits-input:1x1x1280-output:10": {"ms": 0.02}}}
REF_TABLE = {"Conv-x": {"mean": 1.0, "var": 0.1, "count": 3}, "Conv-y": {"mean": 2.0}}
NET_CONFIG = json.loads((REFERENCE / "proxyless_cpu.config").read_text())
FIELD_NAMES = sorted({"name", "input_size", "stages", "width", "depth", "stride", "ms", "mean",
                      "var", "entries", "meta", "calibration", "format", "blocks", "space",
                      "threads", "scales", "offset", "arch", "first_conv"})

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
scalars = (st.none() | st.booleans() | st.integers() | st.integers(-3, 3)
           | st.floats(allow_nan=True, allow_infinity=True) | text)
keys = st.sampled_from(FIELD_NAMES) | text | st.integers(-2, 2)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(keys, inner, max_size=4), max_leaves=20)
yaml_text = st.lists(st.sampled_from([*"ab1e.:-[]{}&*!|>'\"#,? \n\t", "\x00", "é", "\ufeff",
                                      "<<", "!!set", "&a ", "*a", "0x1f"]),
                     max_size=40).map("".join)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


def valid_or_named(load: Callable[[], Any]) -> Any:
    """`load()`'s object, or None where it raised one short ProxylessError."""
    try:
        return load()
    except ProxylessError as err:
        message = str(err)
        assert message and "\n" not in message and len(message) < 400, message[:1000]
        return None


def write(path: Path, data: Any) -> Path:
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif path.suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a document that a mutation may hit."""
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += paths(value, (*prefix, i))
    return found


@st.composite
def mutations(draw: st.DrawFn, base: dict) -> dict:
    """`base` with one field replaced by an arbitrary value, deleted, or one key added."""
    data = copy.deepcopy(base)
    where = draw(st.sampled_from(paths(base)))
    holder = data
    for key in where[:-1]:
        holder = holder[key]
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if action == "replace":
        holder[where[-1]] = draw(values)
    elif action == "delete":
        del holder[where[-1]]
    elif isinstance(holder, dict):
        holder[draw(keys)] = draw(values)
    else:
        holder.append(draw(values))
    return data


def check_space(space: SearchSpace | None) -> None:
    if space is not None:
        assert space.slots() and space.num_architectures() >= 1


def check_table(table: LatencyTable | None) -> None:
    if table is not None:
        assert all(math.isfinite(e.ms) and e.ms >= 0 and math.isfinite(e.spread)
                   for e in table.entries.values())
        check_space(table.space)


def check_arch(arch: Architecture | None) -> None:
    if arch is not None:
        assert decode(arch.space, encode(arch)) == arch


# -- the architecture decoder --------------------------------------------------------------------
@FAST
@given(st.text() | st.lists(st.sampled_from(["k3e6", "k5e3", "k7e6", "zero", "|", "k4e6", " ",
                                             "k3e99", "\n"]), max_size=30).map(" ".join))
def test_any_string_decodes_or_is_named(string):
    check_arch(valid_or_named(lambda: decode(FASHION, string)))


@FAST
@given(values)
def test_any_value_as_an_encoded_architecture(value):
    check_arch(valid_or_named(lambda: decode(FASHION, value)))


# -- the space loader ----------------------------------------------------------------------------
@FAST
@given(st.binary(max_size=200) | yaml_text.map(str.encode), st.sampled_from(["s.yaml", "s.json"]))
def test_any_bytes_as_a_space_file(workdir, content, name):
    path = write(workdir / name, content)
    check_space(valid_or_named(lambda: load_space(path)))


@FEW
@given(values, st.sampled_from(["s.yaml", "s.json"]))
def test_any_document_as_a_space_file(workdir, data, name):
    path = write(workdir / name, data)
    check_space(valid_or_named(lambda: load_space(path)))


@FEW
@given(mutations(SPACE), st.sampled_from(["s.yaml", "s.json"]))
def test_a_mutated_space_file(workdir, data, name):
    path = write(workdir / name, data)
    check_space(valid_or_named(lambda: load_space(path)))


@FEW
@given(mutations(SPACE))
def test_a_mutated_space_mapping(data):
    check_space(valid_or_named(lambda: SearchSpace.from_dict(data)))


# -- the latency table loader --------------------------------------------------------------------
@FAST
@given(st.binary(max_size=200) | yaml_text.map(str.encode), st.sampled_from(["t.yaml", "t.json"]))
def test_any_bytes_as_a_table_file(workdir, content, name):
    path = write(workdir / name, content)
    check_table(valid_or_named(lambda: LatencyTable.load(path)))


@FAST
@given(values | st.dictionaries(text, values, max_size=4), st.sampled_from(["t.yaml", "t.json"]))
def test_any_document_as_a_table_file(workdir, data, name):
    path = write(workdir / name, data)
    check_table(valid_or_named(lambda: LatencyTable.load(path)))


@FAST
@given(mutations(TABLE) | mutations(REF_TABLE), st.sampled_from(["t.yaml", "t.json"]))
def test_a_mutated_table_file(workdir, data, name):
    path = write(workdir / name, data)
    check_table(valid_or_named(lambda: LatencyTable.load(path)))


# -- the architecture-file loader (ours and the reference net.config) ----------------------------
@FAST
@given(st.binary(max_size=200) | yaml_text.map(str.encode), st.sampled_from(["a.yaml", "a.json"]))
def test_any_bytes_as_an_architecture_file(workdir, content, name):
    path = write(workdir / name, content)
    check_arch(valid_or_named(lambda: load_architecture(path)))


@FEW
@given(mutations(ARCH) | mutations({"arch": ARCH}) | values, st.sampled_from(["a.yaml", "a.json"]))
def test_a_mutated_architecture_file(workdir, data, name):
    path = write(workdir / name, data)
    check_arch(valid_or_named(lambda: load_architecture(path)))


@FEW
@given(mutations(NET_CONFIG))
def test_a_mutated_reference_net_config(workdir, data):
    path = write(workdir / "net.json", data)
    check_arch(valid_or_named(lambda: load_architecture(path)))
