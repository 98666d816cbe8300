"""The released ProxylessNAS networks and MobileNetV2 against their published figures."""

import json

import pytest

from proxyless import Architecture, build_network, decode, load_architecture, load_space
from proxyless.model.architecture import import_reference_config
from proxyless.model.layers import count_macs, count_params
from proxyless.model.space import SearchSpace, StageSpec

PUBLISHED = {  # params (M), MACs (M) at 224x224, from the paper
    "proxyless_gpu": (7.12, 465),
    "proxyless_cpu": (4.36, 439),
    "proxyless_mobile": (4.08, 320),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_released_networks_match_published_figures(name, reference_dir):
    arch = load_architecture(reference_dir / f"{name}.config")
    params_m, macs_m = PUBLISHED[name]
    assert count_params(arch) / 1e6 == pytest.approx(params_m, rel=0.01)
    assert count_macs(arch) / 1e6 == pytest.approx(macs_m, rel=0.01)
    assert sum(p.numel() for p in build_network(arch).parameters()) == count_params(arch)


def test_gpu_network_is_shallow_and_wide(reference_dir):
    arch = load_architecture(reference_dir / "proxyless_gpu.config")
    assert arch.encode() == ("k5e3 zero zero zero | k7e3 zero zero k3e3 | k7e6 zero zero k5e3 | "
                             "k5e6 zero k3e3 k5e3 | k7e6 k7e6 k7e6 k5e6 | k7e6")
    assert arch.space.stem.channels == 40 and arch.space.feature_mix == 1728


def test_reference_import_round_trips_through_our_format(reference_dir, tmp_path):
    for path in sorted(reference_dir.glob("*.config")):
        arch = load_architecture(path)
        assert load_architecture(arch.save(tmp_path / f"{path.stem}.json")) == arch


def test_malformed_reference_config_is_a_clear_error(reference_dir):
    from proxyless import ProxylessError

    config = json.loads((reference_dir / "proxyless_cpu.config").read_text())
    del config["blocks"][3]["mobile_inverted_conv"]["out_channels"]
    with pytest.raises(ProxylessError, match=r"blocks\[3\]"):
        import_reference_config(config, "broken")
    config = json.loads((reference_dir / "proxyless_cpu.config").read_text())
    config["blocks"][5]["mobile_inverted_conv"]["name"] = "SEBlock"
    with pytest.raises(ProxylessError, match="SEBlock"):
        import_reference_config(config, "broken")


def mobilenet_v2() -> Architecture:
    """MobileNetV2 1.0 in our encoding: widths of MobileNetV2, unused depth as zero blocks."""
    base = load_space("imagenet")
    stages = (StageSpec(24, 4, 2), StageSpec(32, 4, 2), StageSpec(64, 4, 2),
              StageSpec(96, 4, 1), StageSpec(160, 4, 2), StageSpec(320, 1, 1))
    space = SearchSpace(**{**base.__dict__, "name": "mobilenet_v2", "stages": stages})
    return decode(space, "k3e6 k3e6 zero zero | k3e6 k3e6 k3e6 zero | k3e6 k3e6 k3e6 k3e6 | "
                         "k3e6 k3e6 k3e6 zero | k3e6 k3e6 k3e6 zero | k3e6")


def test_mobilenet_v2_in_our_encoding():
    arch = mobilenet_v2()
    assert count_params(arch) / 1e6 == pytest.approx(3.50, rel=0.01)
    assert count_macs(arch) / 1e6 == pytest.approx(300, rel=0.01)
    net = build_network(arch)
    assert sum(p.numel() for p in net.parameters()) == 3_504_872  # torchvision's figure


def test_the_authors_table_prices_a_classifier_of_other_classes(reference_dir):
    """A user's folder of 4 classes searched against the Pixel 1 table (priced for ImageNet's
    1000): the classifier takes the 1000-class time, said in one warning; every candidate's
    price is the table's own."""
    import dataclasses

    from proxyless.errors import ProxylessWarning
    from proxyless.latency.cost import latency_model
    from proxyless.latency.table import LatencyTable
    from proxyless.model.space import load_space

    table = LatencyTable.load(reference_dir / "mobile_trim.yaml")
    imagenet = load_space("imagenet")
    full = latency_model(table, imagenet)
    with pytest.warns(ProxylessWarning, match="classifier for 1000 classes, the data has 4"):
        four = latency_model(table, dataclasses.replace(imagenet, num_classes=4))
    assert four.fixed == pytest.approx(full.fixed)
    assert four.block_costs == full.block_costs
