"""`proxyless compare` (a Pareto picture of finished folders) and `proxyless cross-latency`
(the same networks timed on several settings, and predicted from latency tables)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from proxyless import Architecture, ProxylessError, load_architecture, load_space
from proxyless.compare import add_compare_parser, cmd_compare, pareto_front
from proxyless.config import write_json_atomic
from proxyless.latency import LatencyTable, latency_model
from proxyless.latency.cross import (
    Column,
    Setting,
    add_cross_latency_parser,
    cmd_cross_latency,
    parse_settings,
    verdict,
)
from proxyless.latency.profile import profile_space
from proxyless.latency.timer import Timer
from proxyless.space import SearchSpace, StageSpec

FAST = ["--min-time", "0"]
QUICK_TIMING = ["--warmup", "1", "--repeats", "3", "--min-time", "0", "--no-progress"]


def small_space(name: str = "small", width: int = 8) -> SearchSpace:
    return SearchSpace(name=name, input_size=28, in_channels=1, num_classes=10,
                       stages=(StageSpec(width, 2, 2), StageSpec(16, 2, 2)),
                       candidates=("k3e3", "k5e6", "zero"), feature_mix=32)


def run_command(*argv: str) -> int:
    """The commands as the CLI runs them (cli.py wires them in; tested here on their own)."""
    parser = argparse.ArgumentParser(prog="proxyless")
    sub = parser.add_subparsers(dest="command", required=True)
    add_compare_parser(sub)
    add_cross_latency_parser(sub)
    args = parser.parse_args([str(a) for a in argv])
    return {"compare": cmd_compare, "cross-latency": cmd_cross_latency}[args.command](args)


def write_run(folder: Path, blocks: tuple[str, ...], top1: float, ms: float,
              data: str = "fashion-mnist") -> Path:
    """A finished `proxyless run` folder as far as compare reads it."""
    arch = Architecture(small_space(), blocks)
    arch.save(folder / "search" / "arch.json")
    write_json_atomic(folder / "results.json", {
        "arch": arch.encode(), "test_top1": top1, "target_ms": 1.0, "predicted_ms": ms * 1.1,
        "measured_ms": ms * 1.25, "speed_factor": 1.25, "search_val_top1": top1 - 5,
        "data": data, "device": "a test CPU", "threads": 1, "backend": "torch", "batch": 1})
    return folder


def write_train(folder: Path, blocks: tuple[str, ...], top1: float, data: str) -> Path:
    arch = Architecture(small_space(), blocks)
    write_json_atomic(folder / "config.json", {"arch": arch.to_dict()})
    write_json_atomic(folder / "final.json", {"arch": arch.encode(), "test_top1": top1,
                                              "data": data})
    return folder


def write_search(folder: Path, blocks: tuple[str, ...], val_top1: float, ms: float) -> Path:
    arch = Architecture(small_space(), blocks)
    arch.save(folder / "arch.json")
    write_json_atomic(folder / "summary.json", {
        "arch": arch.encode(), "val_top1": val_top1, "measured_ms": ms, "speed_factor": 1.0,
        "predicted_ms": ms, "table_device": "a test CPU"})
    return folder


def table_rows(markdown: str) -> dict[str, list[str]]:
    """The markdown table's rows (header and rule left out) by their first cell."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][2:]
    return {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("| ").split(" | ")] for line in lines)}


def test_pareto_front_keeps_what_nothing_beats():
    points = [(1.0, 80.0), (2.0, 85.0), (1.5, 79.0), (1.0, 80.0), (None, 99.0), (3.0, 85.0)]
    assert pareto_front(points) == [True, True, False, True, None, False]


def test_compare_run_train_and_search_folders(tmp_path, capsys):
    folders = [write_run(tmp_path / "fast", ("k3e3", "k3e3", "k3e3", "zero"), 80.0, 1.0),
               write_run(tmp_path / "big", ("k5e6", "k5e6", "k5e6", "k5e6"), 85.0, 2.0),
               write_run(tmp_path / "dominated", ("k5e6", "k5e6", "k3e3", "zero"), 79.0, 1.5),
               write_train(tmp_path / "trained", ("k3e3", "k5e6", "k3e3", "zero"), 83.0,
                           "cifar10"),
               write_search(tmp_path / "searched", ("k3e3", "k3e3", "k5e6", "zero"), 70.0, 1.2)]
    assert run_command("compare", *folders, "--out", tmp_path / "cmp") == 0
    out, err = capsys.readouterr()
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert text in out and (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000
    rows = table_rows(text)
    assert list(rows) == ["fast", "searched", "dominated", "big", "trained"]  # by latency
    # network | top-1 | latency | predicted | MACs | params | recorded on | front (lat) | ...
    assert rows["fast"][1] == "1.000" and rows["fast"][5] == "torch:b1:t1"  # 1.25 / 1.25
    assert [rows[n][6] for n in ("fast", "big", "dominated", "trained")] == \
        ["**yes**", "**yes**", "no", "n/a"]
    assert rows["searched"][0].startswith("n/a (supernet val 70.00%)")
    assert rows["searched"][6] == "n/a"  # no test top-1: not on the accuracy plot
    assert "different data sets (cifar10, fashion-mnist)" in text and "cifar10" in err


def test_compare_measure_times_every_network_now(trained_run, tmp_path, capsys):
    other = Architecture(small_space("wider", 16), ("k3e3", "k3e3", "k3e3", "zero"))
    run = write_run(tmp_path / "run", ("k3e3", "k3e3", "k3e3", "zero"), 80.0, 1.0)
    other.save(run / "search" / "arch.json")
    (run / "results.json").write_text(json.dumps(
        {**json.loads((run / "results.json").read_text()), "arch": other.encode()}))
    run_command("compare", trained_run, run, "--measure", *FAST, "--no-progress", "--names",
                "trained", "wider", "--out", tmp_path / "cmp")
    rows = table_rows((tmp_path / "cmp" / "compare.md").read_text())
    assert set(rows) == {"trained", "wider"}
    assert rows["trained"][0] == "small" and rows["wider"][0] == "wider"  # a space column
    assert all(float(row[2]) > 0 for row in rows.values())  # measured now, train folder too
    assert "measured now" in capsys.readouterr().out


def test_compare_refuses_folders_it_does_not_know(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProxylessError, match="empty holds none of results.json"):
        run_command("compare", tmp_path / "empty", "--out", tmp_path / "cmp")
    write_search(tmp_path / "half" / "search", ("k3e3", "k3e3", "k3e3", "zero"), 70.0, 1.0)
    with pytest.raises(ProxylessError, match=r"its search has finished: give .*half/search"):
        run_command("compare", tmp_path / "half", "--out", tmp_path / "cmp")
    run = write_run(tmp_path / "run", ("k3e3", "k3e3", "k3e3", "zero"), 80.0, 1.0)
    with pytest.raises(ProxylessError, match="results.json is a file; give the run"):
        run_command("compare", run / "results.json", "--out", tmp_path / "cmp")
    with pytest.raises(ProxylessError, match="--names gives 2 names for 1 networks"):
        run_command("compare", run, "--names", "a", "b", "--out", tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("text, message", [
    ("torch:b0:t1", "batch .* from 1"),
    ("tpu:b1:t1", "unknown backend 'tpu'"),
    ("torch:1", "expected BACKEND:bBATCH:tTHREADS"),
])
def test_bad_settings_are_clear_errors(text, message, tmp_path):
    with pytest.raises(ProxylessError, match=message):
        run_command("cross-latency", tmp_path / "none-needed", "--settings", text)
    with pytest.raises(ProxylessError, match="more than once"):
        parse_settings(["torch:b1:t1", "torch:b1:t1"])
    assert parse_settings(["none"]) == []
    assert parse_settings(["onnxruntime:b64:t2"]) == [Setting("onnxruntime", 64, 2)]


def test_verdicts_name_the_fastest_and_say_when_networks_do_not_differ():
    def column(ms, home):
        return Column("torch:b1:t1", "measured", "", ms, [None] * len(ms), home)

    names = ["a", "b", "c"]
    assert "fastest is **b**, the network found" in verdict(column([2.0, 1.0, 3.0],
                                                                   [False, True, False]), names)
    line = verdict(column([2.0, 1.0, 3.0], [True, False, False]), names)
    assert "fastest is **b**, not the one found for this setting: a (x2.00)" in line
    assert "the networks do not differ on torch:b1:t1" in verdict(
        column([1.0, 1.04, None], [False] * 3), names)
    assert "only **c** has a figure" in verdict(column([None, None, 3.0], [False] * 3), names)


@pytest.fixture(scope="module")
def small_table(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("table") / "small.json"
    profile_space(small_space(), path, Timer("torch", threads=1, warmup=1, repeats=3,
                                             min_time=0), progress=False)
    return path


def test_cross_latency_matrix(small_table, trained_run, tmp_path, capsys):
    run = write_run(tmp_path / "found", ("k5e6", "k5e6", "k3e3", "zero"), 82.0, 1.0)
    LatencyTable.load(small_table).save(run / "latency_table.json")  # searched with it
    other = Architecture(small_space("other", 24), ("k3e3", "k3e3", "k5e6", "zero"))
    arch_file = other.save(tmp_path / "other.json")
    run_command("cross-latency", run, trained_run / "model.pt", arch_file, "--settings",
                "torch:b1:t1", "onnxruntime:b1:t1", "--table", small_table, *QUICK_TIMING,
                "--out", tmp_path / "cross")
    out = capsys.readouterr().out
    matrix = json.loads((tmp_path / "cross" / "matrix.json").read_text())
    text = (tmp_path / "cross" / "matrix.md").read_text()
    assert text in out and (tmp_path / "cross" / "architectures.png").stat().st_size > 5_000
    names = [n["name"] for n in matrix["networks"]]
    assert names == ["found", "run", "other"]  # model.pt takes its folder's name
    found, trained, odd = matrix["networks"]
    assert found["found_for"] == ["torch:b1:t1", "small.json"] and trained["found_for"] == []
    assert trained["test_top1"] is not None and found["test_top1"] == 82.0
    for label in ("torch:b1:t1", "onnxruntime:b1:t1"):
        assert all(n["ms"][label] > 0 for n in matrix["networks"])
        fastest = min(matrix["networks"], key=lambda n: n["ms"][label])["name"]
        assert [c["fastest"] for c in matrix["columns"] if c["label"] == label] == [fastest]
    predicted = latency_model(LatencyTable.load(small_table)).predict(
        load_architecture(run / "search" / "arch.json"))
    assert found["ms"]["small.json"] == pytest.approx(predicted)
    assert odd["ms"]["small.json"] is None and "lacks" in odd["notes"]["small.json"]
    rows = table_rows(text)
    for column in range(1, 4):  # one bold (fastest) cell per column
        assert sum(row[column].startswith("**") for row in rows.values()) == 1
    assert rows["found"][1].endswith("†") and text.count("fastest is **") >= 1


def test_reference_networks_predicted_for_the_pixel_phone_without_measuring(reference_dir,
                                                                            tmp_path):
    table_path = reference_dir / "mobile_trim.yaml"
    imagenet = Architecture.uniform(load_space("imagenet"), "k3e6")
    networks = [reference_dir / "proxyless_gpu.config", reference_dir / "proxyless_mobile.config",
                imagenet.save(tmp_path / "mbv2-like.json")]
    run_command("cross-latency", *networks, "--settings", "none", "--table", table_path,
                "--out", tmp_path / "pixel")
    matrix = json.loads((tmp_path / "pixel" / "matrix.json").read_text())
    gpu, mobile, uniform = matrix["networks"]
    assert [c["label"] for c in matrix["columns"]] == ["mobile_trim.yaml"]
    assert uniform["ms"]["mobile_trim.yaml"] == pytest.approx(
        latency_model(LatencyTable.load(table_path), imagenet.space).predict(imagenet))
    # the released networks' widths are not the paper's space at width 1.0, which is all
    # the authors' table covers: n/a, with the reason, rather than a made-up figure
    for network in (gpu, mobile):
        assert network["ms"]["mobile_trim.yaml"] is None
        assert "the table lacks" in network["notes"]["mobile_trim.yaml"]
    with pytest.raises(ProxylessError, match="nothing to compare"):
        run_command("cross-latency", *networks, "--settings", "none", "--out", tmp_path / "x")
