"""Profiling kits: made here, timed by profile_kit.py with numpy and onnxruntime alone,
turned back into a calibrated, checked latency table; damaged kits and foreign timings are
refused."""

import json
import math
import re
import shutil
import subprocess
import sys

import pytest

from conftest import small_space
from proxyless.cli import main
from proxyless.errors import ProxylessError
from proxyless.latency.cost import latency_model
from proxyless.latency.kit import make_kit, table_from_kit
from proxyless.latency.profile import layer_workloads
from proxyless.latency.table import LatencyTable
from proxyless.model.architecture import Architecture
from proxyless.model.space import load_space

# profile_kit.py run as on a device without PyTorch: importing torch (or proxyless) fails
WITHOUT_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['proxyless'] = "
                 "None; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
QUICK = ["--min-time", "0", "--repeats", "2", "--warmup", "1"]


def run_script(kit, *args):
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, str(kit / "profile_kit.py"),
                           *args], capture_output=True, text=True, cwd=kit)


@pytest.fixture(scope="module")
def timed_kit(tmp_path_factory):
    """A kit of the small space (8 calibration and 3 check networks), timed on this CPU."""
    kit = tmp_path_factory.mktemp("kit") / "kit"
    make_kit(small_space(), kit, calibration=8, check=3)
    done = run_script(kit, "--out", str(kit.parent / "timings.json"), *QUICK)
    assert done.returncode == 0, done.stderr
    return kit, kit.parent / "timings.json"


def test_a_kit_holds_every_layer_without_its_weights(timed_kit):
    import onnx

    kit, _ = timed_kit
    manifest = json.loads((kit / "kit.json").read_text())
    space = small_space()
    layers = [w for w in manifest["workloads"] if w["kind"] == "layer"]
    assert sorted(w["key"] for w in layers) == sorted(layer_workloads(space, 1))
    roles = [w["role"] for w in manifest["workloads"] if w["kind"] == "network"]
    assert sorted(roles) == ["anchor"] + ["calibration"] * 8 + ["check"] * 3
    # weights live outside the graphs: written on the device by the script, not shipped
    network = next(w for w in manifest["workloads"] if w.get("role") == "anchor")
    graph = kit / network["file"]
    assert graph.stat().st_size < network["weights"]["size"] / 4
    assert (graph.parent / network["weights"]["file"]).stat().st_size == \
        network["weights"]["size"]
    model = onnx.load(str(graph))  # loads its external data: a well-formed ONNX model
    onnx.checker.check_model(model)


def test_the_table_from_a_kit_is_calibrated_checked_and_usable(timed_kit, tmp_path):
    _, timings = timed_kit
    out = tmp_path / "table.json"
    assert main(["profile", "--space", str(_space_file(tmp_path)), "--from-kit", str(timings),
                 "--out", str(out)]) == 0
    table = LatencyTable.load(out)
    space = small_space()
    assert set(table.entries) == set(layer_workloads(space, 1))
    assert table.meta["source"] == "kit" and table.meta["backend"] == "onnxruntime"
    assert table.calibration["fit"]["architectures"] == 8
    assert table.meta["kit_check"]["samples"] == 3
    assert 0 <= table.meta["kit_check"]["calibrated"]["within_10pct"] <= 100
    # a table like any other (the calibrated figures of 2 timed runs per network are noise)
    plain = latency_model(table, space, calibrated=False)
    lo, hi = plain.bounds()
    assert 0 < lo < plain.predict(Architecture.uniform(space, "k5e6")) <= hi
    assert math.isfinite(latency_model(table, space).predict(Architecture.uniform(space,
                                                                                  "k3e3")))


def test_the_script_refuses_a_changed_file_or_another_kit_version(timed_kit, tmp_path):
    kit = tmp_path / "kit"
    shutil.copytree(timed_kit[0], kit)
    layer = next((kit / "layers").glob("*.onnx"))
    layer.write_bytes(layer.read_bytes() + b"\0")
    done = run_script(kit, "--out", "t.json", *QUICK)
    assert done.returncode != 0 and "changed" in done.stderr and layer.name in done.stderr
    manifest = json.loads((kit / "kit.json").read_text())
    manifest["format"] = "proxyless-kit/0"
    (kit / "kit.json").write_text(json.dumps(manifest))
    done = run_script(kit, "--out", "t.json", *QUICK)
    assert done.returncode != 0 and "proxyless-kit/0" in done.stderr
    assert not (kit / "t.json").exists()


def test_timings_of_another_space_or_version_or_unfinished_are_refused(timed_kit, tmp_path):
    _, timings = timed_kit
    with pytest.raises(ProxylessError, match="space 'small'.*not of 'fashion'"):
        table_from_kit(load_space("fashion"), timings)
    data = json.loads(timings.read_text())
    edited = tmp_path / "t.json"
    edited.write_text(json.dumps({**data, "format": "proxyless-kit/9"}))
    with pytest.raises(ProxylessError, match="kit version 'proxyless-kit/9'"):
        table_from_kit(small_space(), edited)
    name = next(iter(data["timings"]))
    edited.write_text(json.dumps({**data, "timings": {k: v for k, v in data["timings"].items()
                                                      if k != name}}))
    with pytest.raises(ProxylessError, match="lacks timings"):
        table_from_kit(small_space(), edited)
    bad = {**data["timings"], name: {"ms": -1.0}}
    edited.write_text(json.dumps({**data, "timings": bad}))
    with pytest.raises(ProxylessError, match="not a positive number"):
        table_from_kit(small_space(), edited)


@pytest.mark.parametrize(("argv", "message"), [
    (["--kit", "k", "--from-kit", "t.json"], "give one"),
    (["--kit", "k", "--out", "x.json"], "drop --out"),
    ([], "give --out"),
    (["--kit", "k", "--backend", "torch"], "ONNX Runtime"),
    (["--kit", "."], "holds other files"),
])
def test_kit_options_are_checked_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a user's file, not a kit's")
    assert main(["profile", "--space", "fashion", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "k").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _space_file(folder):
    """The small space as a file `--space` takes."""
    import yaml

    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(small_space().to_dict()))
    return path


def test_an_interrupted_timing_goes_on_from_its_last_group(timed_kit, tmp_path):
    kit, timings = timed_kit
    done = json.loads(timings.read_text())
    first = {name: {**t, "ms": 123.0} for name, t in list(done["timings"].items())[:8]}
    progress = tmp_path / "t.json.progress"  # what a run killed after its first group left
    progress.write_text(json.dumps({
        "kit_sha256": done["kit_sha256"], "settings": done["settings"],
        "reference": done["anchor_ms"], "timings": first}))
    rerun = run_script(kit, "--out", str(tmp_path / "t.json"), *QUICK)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming: 8 workloads already timed" in rerun.stdout
    again = json.loads((tmp_path / "t.json").read_text())
    assert {n: again["timings"][n]["ms"] for n in first} == {n: 123.0 for n in first}
    assert again["timings"].keys() == done["timings"].keys()
    assert not progress.exists()


def test_a_calibration_on_fewer_networks_than_terms_is_not_used(tmp_path, capsys):
    """3 networks cannot fit the terms of the small space's calibration (an exact fit that
    once predicted -0.577 ms): the plain sum is kept, and the user is told."""
    kit = tmp_path / "kit"
    make_kit(small_space(), kit, calibration=3, check=3)
    done = run_script(kit, "--out", "timings.json", *QUICK)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "table.json"
    assert main(["profile", "--space", str(_space_file(tmp_path)), "--from-kit",
                 str(kit / "timings.json"), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert re.search(r"calibration not used \(3 networks cannot fit its \d+ terms", said)
    table = LatencyTable.load(out)
    space = small_space()
    plain, used = latency_model(table, space, calibrated=False), latency_model(table, space)
    for token in ("k3e3", "k5e6"):
        arch = Architecture.uniform(space, token)
        assert used.predict(arch) == plain.predict(arch) > 0


def test_a_calibration_making_layers_free_is_floored_or_not_used():
    """A few tiny layers the per-op term takes below nothing cost a tenth of their entry; a
    fit that would take more than a quarter of the layers there, or a network below nothing,
    is not used; nor one that fits its own networks worse than the plain sum."""
    from proxyless.latency.calibration import Calibration, calibration_problem, layer_group
    from proxyless.latency.table import Entry
    from proxyless.model.layers import walk

    space = small_space()
    table = LatencyTable({key: Entry(0.01, 0.0, 1) for key in layer_workloads(space, 1)},
                         {"space": space.to_dict()})
    fit = {"architectures": 20, "terms": 5, "mape_plain_sum": 40.0, "mape_fitted": 3.0}
    blocks = [x for x in walk(Architecture.uniform(space, "k3e3")) if x.searchable]
    good = Calibration(0.01, {"all": 0.5}, fit, per_op=-0.001, grouping="single")
    assert calibration_problem(good, table) is None
    assert good.layer_ms(blocks[0], 0.01) == pytest.approx(0.004)
    weighty = Calibration(0.01, {"all": 0.5}, fit, per_op=-0.001, per_mweight=0.5,
                          grouping="single")
    assert weighty.layer_ms(blocks[0], 0.01) == pytest.approx(0.004 + 0.5 * blocks[0].params
                                                              / 1e6)
    # an older form: a scale per input resolution, one of them 0
    groups = sorted({layer_group(x, "resolution") for x in blocks})
    one_free = Calibration(0.01, {"fixed": 1.0, **{g: 0.5 for g in groups},
                                  groups[0]: 0.0}, fit, per_op=-0.001, grouping="resolution")
    layer = next(x for x in blocks if layer_group(x, "resolution") == groups[0])
    assert one_free.layer_ms(layer, 0.01) == pytest.approx(0.001)  # the floor: a tenth
    all_free = Calibration(0.01, {"all": 1.0}, fit, per_op=-0.02, grouping="single")
    assert "cost nothing or less" in calibration_problem(all_free, table)
    below = Calibration(-1.0, {"all": 1.0}, fit, grouping="single")  # a negative offset
    assert "cheapest network cost -" in calibration_problem(below, table)
    worse = Calibration(0.01, {"fixed": 1.0}, {**fit, "mape_fitted": 41.0})
    assert "worse than the plain sum" in calibration_problem(worse, table)
    refused = Calibration.from_dict(good.refuse("a reason").to_dict())
    assert (refused.offset, refused.per_op, refused.per_mweight, refused.scale("all"),
            refused.refused, refused.grouping) == (0.0, 0.0, 0.0, 1.0, "a reason", "single")


def test_from_kit_says_what_a_wrong_file_is_and_what_to_run(timed_kit, tmp_path):
    kit, timings = timed_kit
    done = json.loads(timings.read_text())
    progress = tmp_path / "timings.json.progress"
    progress.write_text(json.dumps({"kit_sha256": done["kit_sha256"], "settings": {},
                                    "reference": 1.0, "timings": {}}))
    with pytest.raises(ProxylessError, match=r"unfinished timing .* run `python "
                                             r"profile_kit.py --out timings.json` again"):
        table_from_kit(small_space(), progress)
    with pytest.raises(ProxylessError, match="a kit's manifest, not its timings"):
        table_from_kit(small_space(), kit / "kit.json")


def test_timings_beside_another_kit_are_refused(timed_kit, tmp_path):
    kit, timings = timed_kit
    mixed = tmp_path / "kit"
    shutil.copytree(kit, mixed)
    shutil.copyfile(timings, mixed / "timings.json")
    table_from_kit(small_space(), mixed / "timings.json")  # its own kit: fine
    manifest = json.loads((mixed / "kit.json").read_text())
    manifest["batch"] = 2  # a changed (or another) kit
    (mixed / "kit.json").write_text(json.dumps(manifest))
    with pytest.raises(ProxylessError, match="not timed with the kit beside it"):
        table_from_kit(small_space(), mixed / "timings.json")
