"""Lookup tables, the differentiable latency model, profiling, calibration and the check."""

import json
import random

import numpy as np
import pytest
import torch

from proxyless import Architecture, ProxylessError, load_architecture, load_space
from proxyless.latency import LatencyTable, flops_model, latency_model, params_model
from proxyless.latency.calibration import (
    Calibration,
    calibrate,
    fit_calibration,
    mweight_count,
    op_count,
    table_parts,
)
from proxyless.latency.check import latency_check
from proxyless.latency.profile import ProfileSetting, layer_workloads, profile_space
from proxyless.latency.timer import Timer
from proxyless.model.layers import count_macs, count_params, walk
from proxyless.model.space import SearchSpace, StageSpec
from proxyless.model.supernet import SuperNet


def tiny_space() -> SearchSpace:
    return SearchSpace(name="tiny", input_size=16, in_channels=1, num_classes=4,
                       stages=(StageSpec(8, 2, 2), StageSpec(16, 2, 2)),
                       candidates=("k3e3", "k5e6", "zero"), feature_mix=32)


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "tiny.json"
    timer = Timer("torch", threads=1, warmup=1, repeats=3, min_time=0)
    return profile_space(tiny_space(), path, timer, progress=False), path


def test_reference_pixel_table_loads_and_predicts(reference_dir):
    table = LatencyTable.load(reference_dir / "mobile_trim.yaml")
    space = load_space("imagenet")
    model = latency_model(table, space)
    lo, hi = model.bounds()
    assert 0 < lo < hi
    fixed = 4.083755600814664 + 3.088623217922607 + 0.3096415478615071
    first_block_k3 = table.ms("expanded_conv-input:112x112x32-output:112x112x16-expand:1-"
                              "kernel:3-stride:1-idskip:0")
    assert model.fixed == pytest.approx(fixed + first_block_k3)
    arch = Architecture.uniform(space, "k3e6")
    assert model.predict(arch) == pytest.approx(
        sum(table.ms(x.key) for x in walk(arch) if x.key))


def test_table_without_an_entry_names_it(reference_dir):
    table = LatencyTable.load(reference_dir / "mobile_trim.yaml")
    mobile = load_architecture(reference_dir / "proxyless_mobile.config")  # other widths
    with pytest.raises(ProxylessError, match=r"no entry 'expanded_conv-input:112x112x16-output:"
                                             r"56x56x32"):
        latency_model(table, mobile.space)
    with pytest.raises(ProxylessError, match="no entry"):
        latency_model(table, load_space("cifar"))


def test_model_of_another_space_refuses_its_architectures(tiny_table):
    table, _ = tiny_table
    model = latency_model(table)
    with pytest.raises(ProxylessError, match="space"):
        model.predict(Architecture.uniform(load_space("fashion"), "k3e3"))


def test_expected_latency_is_differentiable_and_exact(tiny_table):
    table, _ = tiny_table
    space = tiny_space()
    model = latency_model(table, space, calibrated=False)
    torch.manual_seed(0)
    net = SuperNet(space)
    with torch.no_grad():
        for op in net.mixed_ops:
            op.alpha.normal_()
    expected = model.expected_supernet(net)
    expected.backward()
    for op, costs in zip(net.mixed_ops, model.block_costs, strict=True):
        p, f = op.probs().detach(), torch.tensor(costs)
        torch.testing.assert_close(op.alpha.grad, p * (f - (p * f).sum()))
    # E[LAT] equals the average over all architectures weighted by their probability
    probs = [op.probs().detach() for op in net.mixed_ops]
    total = 0.0
    for arch_idx in np.ndindex(*[len(p) for p in probs]):
        weight = float(np.prod([p[i] for p, i in zip(probs, arch_idx, strict=True)]))
        total += weight * model.predict(Architecture.from_indices(space, arch_idx))
    assert expected.item() == pytest.approx(total, rel=1e-5)


def test_flops_and_params_through_the_same_interface():
    space = load_space("fashion")
    arch = Architecture.random(space, random.Random(3))
    assert flops_model(space).predict(arch) == pytest.approx(count_macs(arch) / 1e6)
    assert params_model(space).predict(arch) == pytest.approx(count_params(arch) / 1e6)


def test_profile_covers_the_space_and_records_its_settings(tiny_table):
    table, path = tiny_table
    assert set(table.entries) == set(layer_workloads(tiny_space(), 1))
    assert all(e.ms > 0 and e.count == 6 for e in table.entries.values())  # 3 visits x 2
    for key in ("cpu", "torch", "backend", "threads", "batch", "date", "space"):
        assert key in table.meta
    assert LatencyTable.load(path).entries.keys() == table.entries.keys()
    latency_model(LatencyTable.load(path))  # covers every architecture of its space


def test_profile_resumes_after_interruption(tmp_path, monkeypatch):
    timer = Timer("torch", threads=1, warmup=0, repeats=2, min_time=0)
    real, calls = Timer.time, []

    def flaky(self, workloads, *args, **kwargs):
        calls.append(len(workloads))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, workloads, *args, **kwargs)

    monkeypatch.setattr(Timer, "time", flaky)
    out = tmp_path / "t.json"
    with pytest.raises(KeyboardInterrupt):
        profile_space(tiny_space(), out, timer, progress=False, chunk=4)
    assert len(LatencyTable.load(out).entries) == 4  # the finished chunk was kept
    assert "anchor_ms" in LatencyTable.load(out).meta
    calls.clear()
    monkeypatch.setattr(Timer, "time",
                        lambda self, w, *a, **k: calls.append(len(w)) or real(self, w, *a, **k))
    table = profile_space(tiny_space(), out, timer, progress=False, chunk=4)
    # only the missing entries were measured (each group also times the anchor network)
    assert sum(calls) - len(calls) == len(table.entries) - 4
    with pytest.raises(ProxylessError, match="threads"):
        profile_space(tiny_space(), out, Timer("torch", threads=2, warmup=0, repeats=2,
                                               min_time=0), progress=False)


def test_onnxruntime_backend(tmp_path):
    timer = Timer("onnxruntime", threads=1, warmup=1, repeats=3, min_time=0)
    table = profile_space(tiny_space(), tmp_path / "ort.json", timer, progress=False)
    assert table.meta["backend"] == "onnxruntime" and "onnxruntime" in table.meta
    assert all(e.ms > 0 for e in table.entries.values())


def test_calibration_recovers_a_known_correction():
    rng = np.random.default_rng(0)
    parts = [{"fixed": rng.uniform(1, 2), "k3": rng.uniform(0, 3), "k5": rng.uniform(0, 3)}
             for _ in range(30)]
    measured = [0.3 + 1.1 * p["fixed"] + 0.8 * p["k3"] + 1.3 * p["k5"] for p in parts]
    cal = fit_calibration(parts, measured)
    assert cal.offset == pytest.approx(0.3, abs=1e-6)
    assert cal.scales == pytest.approx({"fixed": 1.1, "k3": 0.8, "k5": 1.3}, abs=1e-6)
    assert cal.fit["mape_fitted"] < 1e-6 < cal.fit["mape_plain_sum"]
    ops = [int(rng.integers(2, 9)) for _ in parts]  # a per-op term of either sign is found
    for per_op in (0.05, -0.05):
        shifted = [m + per_op * n for m, n in zip(measured, ops, strict=True)]
        cal = fit_calibration(parts, shifted, ops)
        assert cal.per_op == pytest.approx(per_op, abs=1e-6)
        assert cal.offset == pytest.approx(0.3, abs=1e-6)
    weights = [float(rng.uniform(0.1, 2.0)) for _ in parts]  # and the weights term, with an
    for offset in (0.3, -0.2):                                 # offset of either sign
        shifted = [m - 0.3 + offset - 0.01 * n + 0.07 * w
                   for m, n, w in zip(measured, ops, weights, strict=True)]
        cal = fit_calibration(parts, shifted, ops, mweights=weights)
        assert (cal.offset, cal.per_op, cal.per_mweight) == pytest.approx((offset, -0.01, 0.07),
                                                                          abs=1e-6)
        assert cal.fit["terms"] == 6  # offset, three scales, per op, per weight


def test_calibrated_model_matches_calibrated_parts(tiny_table):
    table, _ = tiny_table
    table = LatencyTable(dict(table.entries), dict(table.meta))
    calibration = calibrate(table, count=6, progress=False)
    space = tiny_space()
    model = latency_model(table, space)
    for seed in range(5):
        arch = Architecture.random(space, random.Random(seed))
        parts = table_parts(arch, table)
        expected = (calibration.offset + calibration.per_op * op_count(arch)
                    + calibration.per_mweight * mweight_count(arch)
                    + sum(calibration.scale(kind) * ms for kind, ms in parts.items()))
        assert model.predict(arch) == pytest.approx(expected)


def test_latency_check_reports_and_plots(tiny_table, tmp_path):
    table, _ = tiny_table
    table = LatencyTable(dict(table.entries), dict(table.meta))
    calibrate(table, count=6, progress=False)
    result = latency_check(table, samples=5, plot=tmp_path / "check.png", progress=False)
    for key in ("mape", "spearman", "within_10pct", "mape_uncalibrated"):
        assert isinstance(result[key], float)
    assert len(result["measured_ms"]) == 5
    assert (tmp_path / "check.png").stat().st_size > 1000
    json.dumps(result)


def test_reference_table_cannot_be_measured_here(reference_dir):
    table = LatencyTable.load(reference_dir / "mobile_trim.yaml")
    with pytest.raises(ProxylessError, match="not measured on this machine"):
        latency_check(table, samples=3, progress=False)


def test_bad_table_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("just: a string\n")
    with pytest.raises(ProxylessError, match="not a latency table"):
        LatencyTable.load(path)


def test_reinforce_measures_new_samples_together_on_one_time_base(monkeypatch):
    from proxyless.search import SearchConfig
    from proxyless.search.reinforce import ReinforceStrategy

    real, calls = Timer.time, []
    monkeypatch.setattr(Timer, "time",
                        lambda self, w, *a, **k: calls.append(len(w)) or real(self, w, *a, **k))
    space = tiny_space()
    strategy = ReinforceStrategy(SuperNet(space), None, SearchConfig(
        strategy="reinforce", measure_latency=True, target=1.0))
    archs = [Architecture.random(space, random.Random(seed)) for seed in range(3)]
    strategy.measured.measure_new(archs + archs[:1])
    assert calls == [len({a.encode() for a in archs}) + 1]  # one group, with the anchor
    assert "anchor_ms" in strategy.state_dict()["time_base"]
    assert all(strategy.latency(a) > 0 for a in archs) and len(calls) == 1  # cached
    resumed = ReinforceStrategy(SuperNet(space), None, strategy.config)
    resumed.load_state_dict(strategy.state_dict())
    assert resumed.latency(archs[0]) == strategy.latency(archs[0]) and len(calls) == 1


def test_measured_latency_takes_the_tables_time_base(tiny_table):
    from proxyless.latency.measure import MeasuredLatency

    table, _ = tiny_table
    table = LatencyTable(dict(table.entries), dict(table.meta))
    measured = MeasuredLatency.for_table(table)
    arch = Architecture.uniform(tiny_space(), "k5e6")
    assert measured(arch) > 0
    assert measured.state_dict()["time_base"]["anchor_ms"] == table.meta["anchor_ms"]


@pytest.mark.parametrize("older", [
    {"offset": 0.0, "scales": {"k3": 1.0}, "per_op": 0.0, "fit": {}},  # by kernel
    {"offset": 0.0, "scales": {"fixed": 1.0, "r4": 1.2}, "per_op": -0.001, "fit": {},
     "grouping": "resolution"}])
def test_a_cached_table_of_an_older_calibration_is_calibrated_again(tmp_path, monkeypatch,
                                                                     older):
    """Tables cached with an older calibration (scales per kernel or per resolution) keep
    their layers and get a new calibration, once."""
    from proxyless.latency.cache import cached_table

    monkeypatch.setenv("PROXYLESS_CACHE", str(tmp_path))
    space, logs = tiny_space(), []
    table, path = cached_table(space, ProfileSetting(min_time=0.01, calibration_networks=8),
                               False, logs.append)
    assert table.calibration["grouping"] == "single"
    old = LatencyTable.load(path)
    old.calibration = older
    old.save(path)
    assert Calibration.from_dict(LatencyTable.load(path).calibration).scale("r4") == \
        older["scales"].get("r4", 1.0)  # an older form loads as it was
    again, _ = cached_table(space, ProfileSetting(min_time=0.01, calibration_networks=8),
                               False, logs.append)
    assert any("recalibrating" in line for line in logs)
    assert again.calibration["grouping"] == "single"
    assert again.entries.keys() == old.entries.keys()
    assert all(again.entries[k].ms == old.entries[k].ms for k in old.entries)  # kept
    logs.clear()
    cached_table(space, ProfileSetting(min_time=0.01, calibration_networks=8),
                               False, logs.append)
    assert not any("recalibrating" in line for line in logs)  # once
