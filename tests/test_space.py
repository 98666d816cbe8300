import json

import pytest
import yaml

from proxyless import ProxylessError, SearchSpace, load_space
from proxyless.model.space import PRESETS, make_divisible, parse_token


def test_imagenet_preset_is_the_papers_space():
    space = load_space("imagenet")
    slots = space.slots()
    assert len(slots) == 21
    assert [len(s.candidates) for s in slots].count(6) == 6
    assert [len(s.candidates) for s in slots].count(7) == 15
    assert [s.stride for s in slots if s.stride == 2] == [2] * 4
    assert slots[-1].out_size == 7 and space.last_channels == 320
    assert space.num_architectures() == 6**6 * 7**15  # about 2.2e17


@pytest.mark.parametrize("name", PRESETS)
def test_presets_round_trip_through_yaml_and_json(name, tmp_path):
    space = load_space(name)
    for suffix, dump in ((".yaml", yaml.safe_dump), (".json", json.dumps)):
        path = tmp_path / f"space{suffix}"
        path.write_text(dump(space.to_dict()))
        assert load_space(path) == space


def test_zero_only_where_shape_is_kept():
    for name in PRESETS:
        for slot in load_space(name).slots():
            assert ("zero" in slot.candidates) == (slot.stride == 1
                                                   and slot.in_channels == slot.out_channels)


@pytest.mark.parametrize("change, message", [
    ({"stages": []}, "stages"),
    ({"input_size": 0}, "input_size"),
    ({"candidates": ["k3e6", "k4e6"]}, "k4e6"),
    ({"candidates": ["k3e6", "bogus"]}, "bogus"),
    ({"candidates": ["zero"]}, "non-zero"),
    ({"candidates": ["k3e6", "k3e6"]}, "duplicates"),
    ({"stem": {"channels": 16, "stride": 3}}, "stem.stride"),
    ({"width_mult": -1.0}, "width_mult"),
    ({"colour": "blue"}, "colour"),
    ({"num_classes": "ten"}, "num_classes"),
])
def test_invalid_space_names_the_field(change, message):
    data = load_space("fashion").to_dict()
    data.update(change)
    with pytest.raises(ProxylessError, match=message):
        SearchSpace.from_dict(data)


def test_stage_field_errors_name_the_stage():
    data = load_space("fashion").to_dict()
    data["stages"][2]["stride"] = 4
    with pytest.raises(ProxylessError, match=r"stages\[2\]\.stride"):
        SearchSpace.from_dict(data)
    del data["stages"][1]["depth"]
    with pytest.raises(ProxylessError, match="depth"):
        SearchSpace.from_dict(data)


def test_missing_space_file_is_a_clear_error(tmp_path):
    with pytest.raises(ProxylessError, match="neither a preset"):
        load_space(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ProxylessError, match="bad.yaml"):
        load_space(bad)


def test_width_multiplier_scales_divisible_by_8():
    data = load_space("imagenet").to_dict()
    data["width_mult"] = 1.4
    space = SearchSpace.from_dict(data)
    assert space.stem_channels == 48 and space.feature_mix_channels == 1792
    assert all(s.out_channels % 8 == 0 for s in space.slots())
    assert make_divisible(44.8) == 48 and make_divisible(3) == 8


def test_parse_token():
    assert parse_token("k5e6").kernel == 5 and parse_token("k5e6").expand == 6
    assert parse_token("zero").is_zero
    for bad in ("k5", "e6", "K5E6", "k5e6 ", "k0e6", "k6e3"):
        with pytest.raises(ProxylessError):
            parse_token(bad)
