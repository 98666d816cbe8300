import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyless import Architecture, ProxylessError, decode, encode, load_architecture, load_space
from proxyless.model.space import PRESETS

SPACES = {name: load_space(name) for name in PRESETS}


@st.composite
def architectures(draw):
    space = SPACES[draw(st.sampled_from(PRESETS))]
    return Architecture(space, tuple(draw(st.sampled_from(s.candidates)) for s in space.slots()))


@settings(max_examples=200, deadline=None)
@given(architectures())
def test_encoding_round_trips(arch):
    text = encode(arch)
    assert decode(arch.space, text) == arch
    assert encode(decode(arch.space, text)) == text
    assert Architecture.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
    assert Architecture.from_indices(arch.space, arch.indices()) == arch


@settings(max_examples=50, deadline=None)
@given(architectures(), st.sampled_from([".json", ".yaml"]))
def test_files_round_trip(tmp_path_factory, arch, suffix):
    path = arch.save(tmp_path_factory.mktemp("arch") / f"a{suffix}")
    assert load_architecture(path) == arch


def test_flat_token_list_is_accepted():
    space = SPACES["fashion"]
    arch = Architecture.random(space, random.Random(1))
    assert decode(space, " ".join(arch.blocks)) == arch


def test_unknown_token_names_it_and_its_position():
    space = SPACES["fashion"]
    tokens = list(Architecture.uniform(space, "k3e6").blocks)
    tokens[4] = "k3e9x"
    with pytest.raises(ProxylessError, match=r"block 4.*'k3e9x'"):
        decode(space, " ".join(tokens))


def test_zero_where_shape_changes_is_rejected():
    space = SPACES["fashion"]
    tokens = list(Architecture.uniform(space, "k3e6").blocks)
    tokens[0] = "zero"  # block 0 has stride 2
    with pytest.raises(ProxylessError, match=r"block 0.*zero.*stride"):
        Architecture(space, tuple(tokens))


def test_token_not_in_candidates_is_rejected():
    data = SPACES["fashion"].to_dict()
    data["candidates"] = ["k3e3", "k5e6", "zero"]
    space = type(SPACES["fashion"]).from_dict(data)
    with pytest.raises(ProxylessError, match="k7e6.*not a candidate"):
        Architecture.uniform(space, "k7e6")


def test_wrong_counts_are_rejected():
    space = SPACES["fashion"]
    with pytest.raises(ProxylessError, match="13 searchable blocks"):
        decode(space, "k3e6 k3e6")
    text = encode(Architecture.uniform(space, "k3e6"))
    with pytest.raises(ProxylessError, match="stage 0"):
        decode(space, text.replace("k3e6 k3e6 |", "k3e6 |", 1))
    with pytest.raises(ProxylessError, match="stages"):
        decode(space, text + " | k3e6")


def test_bad_architecture_file(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"space": "fashion", "blocks": "k3e6"}))
    with pytest.raises(ProxylessError, match="13 searchable blocks"):
        load_architecture(path)
    path.write_text(json.dumps({"space": "fashion", "blocks": ["k3e6"] * 13, "extra": 1}))
    with pytest.raises(ProxylessError, match="extra"):
        load_architecture(path)
    path.write_text("{not json")
    with pytest.raises(ProxylessError, match="arch.json"):
        load_architecture(path)


def test_preset_name_as_space_in_file(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"space": "fashion", "blocks": ["k5e3"] * 13}))
    assert load_architecture(path) == Architecture.uniform(SPACES["fashion"], "k5e3")
