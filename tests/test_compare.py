"""`proxyless compare` (a Pareto picture of finished folders) and `proxyless cross-latency`
(the same networks timed on several settings, and predicted from latency tables)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from proxyless import Architecture, ProxylessError, load_architecture, load_space
from proxyless.cli.compare import add_compare_parser, cmd_compare
from proxyless.cli.latency import add_cross_latency_parser, cmd_cross_latency
from proxyless.files import write_json_atomic
from proxyless.latency import LatencyTable, latency_model
from proxyless.latency.matrix import Column, verdict
from proxyless.latency.profile import profile_space
from proxyless.latency.settings import Setting, parse_settings
from proxyless.latency.table import Entry
from proxyless.latency.timer import Timer, cpu_model
from proxyless.model.space import SearchSpace, StageSpec
from proxyless.pipeline.pareto import pareto_front
from proxyless.pipeline.run_folders import load_network, name_networks

FAST = ["--min-time", "0"]
QUICK_TIMING = ["--warmup", "1", "--repeats", "3", "--min-time", "0", "--no-progress"]


def small_space(name: str = "small", width: int = 8) -> SearchSpace:
    return SearchSpace(name=name, input_size=28, in_channels=1, num_classes=10,
                       stages=(StageSpec(width, 2, 2), StageSpec(16, 2, 2)),
                       candidates=("k3e3", "k5e6", "zero"), feature_mix=32)


def run_command(*argv: str) -> int:
    """The commands as the CLI runs them (proxyless.cli wires them in; tested here on their own)."""
    parser = argparse.ArgumentParser(prog="proxyless")
    sub = parser.add_subparsers(dest="command", required=True)
    add_compare_parser(sub)
    add_cross_latency_parser(sub)
    args = parser.parse_args([str(a) for a in argv])
    return {"compare": cmd_compare, "cross-latency": cmd_cross_latency}[args.command](args)


def write_run(folder: Path, blocks: tuple[str, ...], top1: float, ms: float,
              data: str = "fashion-mnist", threads: int = 1) -> Path:
    """A finished `proxyless run` folder as far as compare reads it (without its copy of
    the latency table: the setting comes from results.json)."""
    arch = Architecture(small_space(), blocks)
    arch.save(folder / "search" / "arch.json")
    write_json_atomic(folder / "results.json", {
        "arch": arch.encode(), "test_top1": top1, "target_ms": 1.0, "predicted_ms": ms * 1.1,
        "measured_ms": ms * 1.25, "speed_factor": 1.25, "search_val_top1": top1 - 5,
        "data": data, "device": "a test CPU", "threads": threads, "backend": "torch",
        "batch": 1})
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
    assert rows["fast"][1] == "1.000"  # 1.25 / 1.25
    assert rows["fast"][5] == "torch:b1:t1 on a test CPU"
    assert [rows[n][6] for n in ("fast", "big", "dominated", "trained")] == \
        ["**yes**", "**yes**", "no", "n/a"]
    assert rows["searched"][0].startswith("n/a (supernet val 70.00%)")
    assert rows["searched"][6] == "n/a"  # no test top-1: not on the accuracy plot
    assert "different data sets (cifar10, fashion-mnist)" in text and "cifar10" in err


def test_compare_warns_of_latencies_recorded_with_different_settings(tmp_path, capsys):
    folders = [write_run(tmp_path / "one", ("k3e3", "k3e3", "k3e3", "zero"), 80.0, 1.0),
               write_run(tmp_path / "two", ("k5e6", "k5e6", "k5e6", "k5e6"), 85.0, 2.0,
                         threads=2)]
    run_command("compare", *folders, "--out", tmp_path / "cmp")
    text, err = (tmp_path / "cmp" / "compare.md").read_text(), capsys.readouterr().err
    rows = table_rows(text)
    assert [rows[n][5] for n in ("one", "two")] == ["torch:b1:t1 on a test CPU",
                                                    "torch:b1:t2 on a test CPU"]
    warning = ("warning: the recorded latencies were measured with different settings or "
               "machines; they do not compare: --measure times all networks now")
    assert f"- {warning}" in text and f"proxyless: {warning}" in err


def test_compare_measure_times_every_network_now(trained_run, tmp_path, capsys):
    other = Architecture(small_space("wider", 16), ("k3e3", "k3e3", "k3e3", "zero"))
    run = write_run(tmp_path / "run", ("k3e3", "k3e3", "k3e3", "zero"), 80.0, 1.0)
    other.save(run / "search" / "arch.json")
    (run / "results.json").write_text(json.dumps(
        {**json.loads((run / "results.json").read_text()), "arch": other.encode()}))
    run_command("compare", trained_run, run, "--measure", *FAST, "--no-progress", "--names",
                "trained", "wider", "--out", tmp_path / "cmp")
    text = (tmp_path / "cmp" / "compare.md").read_text()
    rows = table_rows(text)
    assert set(rows) == {"trained", "wider"}
    assert rows["trained"][0] == "small" and rows["wider"][0] == "wider"  # a space column
    assert all(float(row[2]) > 0 for row in rows.values())  # measured now, train folder too
    # the prediction stays the folder's own table's, labelled with that table's setting
    header = next(line for line in text.splitlines() if line.startswith("| network"))
    assert "| predicted (ms) |" in header and "| predicted on |" in header
    assert "recorded on" not in header
    assert rows["wider"][3] == "1.100" and rows["wider"][6] == "torch:b1:t1 on a test CPU"
    assert rows["trained"][3] == "n/a" and rows["trained"][6] == "n/a"
    assert ("Predicted: each folder's own latency table's sum, for the setting in "
            "\"predicted on\" (its table's, not the setting measured now)") in text
    assert "measured now, torch:b1:t1 on" in capsys.readouterr().out


def test_default_names_keep_dots_and_name_model_files_by_their_folder(trained_run, tmp_path):
    blocks = ("k3e3", "k3e3", "k3e3", "zero")
    dotted = write_run(tmp_path / "runs" / "lr0.1", blocks, 80.0, 1.0)
    folder_named_model = write_train(tmp_path / "model", blocks, 80.0, "fashion-mnist")
    retrain = tmp_path / "runs" / "x" / "retrain"
    retrain.mkdir(parents=True)
    shutil.copy(trained_run / "model.pt", retrain / "model.pt")
    search = write_search(tmp_path / "runs" / "x" / "search", blocks, 70.0, 1.0)
    arch_file = Architecture(small_space(), blocks).save(tmp_path / "v1.2.json")
    paths = [dotted, folder_named_model, retrain / "model.pt", search,
             trained_run / "model.pt", arch_file, dotted]
    named = name_networks([load_network(path) for path in paths], None)
    assert [n.name for n in named] == ["lr0.1", "model", "x", "x/search", "run", "v1.2",
                                       "lr0.1#2"]


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
    assert rows["found"][1].endswith("†") and rows["found"][3].endswith("†")
    for column in matrix["columns"]:  # the verdict names the column's fastest network
        line = next(line for line in text.splitlines()
                    if line.startswith(f"- `{column['label']}`: "))
        assert f"fastest is **{column['fastest']}**" in line or "do not differ" in line
    assert (f"- `small.json`: predicted from the latency table {small_table} "
            f"(torch:b1:t1 on {cpu_model()})") in text


def fake_measuring(monkeypatch, figures: dict[str, list[list[float]]]) -> list[str]:
    """cross-latency's measuring replaced by `figures` (per setting label, per round, ms per
    network); returns the progress labels of the calls, in order."""
    calls: list[str] = []

    def measure(archs, setting, timing, progress=False, desc=None):
        calls.append(desc)
        done = sum(call.startswith(setting.label) for call in calls) - 1
        return [Entry(ms) for ms in figures[setting.label][done]]
    monkeypatch.setattr("proxyless.latency.matrix.measure_setting", measure)
    return calls


def test_cross_latency_rounds_interleave_and_marks_only_this_cpus_tables(monkeypatch,
                                                                         tmp_path):
    here = {"backend": "torch", "device": "cpu", "cpu": cpu_model(), "threads": 1, "batch": 1}
    home = write_run(tmp_path / "home", ("k3e3", "k3e3", "k3e3", "zero"), 80.0, 1.0)
    LatencyTable(meta=here).save(home / "latency_table.json")
    abroad = write_run(tmp_path / "abroad", ("k5e6", "k5e6", "k5e6", "zero"), 81.0, 1.0)
    LatencyTable(meta={**here, "cpu": "another CPU"}).save(abroad / "latency_table.json")
    plain = Architecture(small_space(), ("k5e6",) * 4).save(tmp_path / "plain.json")
    calls = fake_measuring(monkeypatch, {  # home, abroad, plain
        "torch:b1:t1": [[2.0, 1.0, 3.0], [2.2, 1.1, 3.3]],
        "onnxruntime:b1:t1": [[2.0, 1.0, 3.0], [1.0, 3.0, 3.0]]})
    run_command("cross-latency", home, abroad, plain, "--settings", "torch:b1:t1",
                "onnxruntime:b1:t1", "--rounds", "2", *QUICK_TIMING, "--out", tmp_path / "x")
    assert calls == ["torch:b1:t1 round 1/2", "onnxruntime:b1:t1 round 1/2",
                     "torch:b1:t1 round 2/2", "onnxruntime:b1:t1 round 2/2"]
    text = (tmp_path / "x" / "matrix.md").read_text()
    verdicts = text.split("## Which network is fastest where\n\n")[1].split("\n\n")[0]
    assert verdicts.splitlines() == [
        "- `torch:b1:t1`: fastest is **abroad**, not the one found for this setting: home "
        "(x2.00)",  # abroad's table has the same setting, on another CPU: not found for it
        "- `onnxruntime:b1:t1`: fastest is **home**; none of these networks was found for "
        "this setting",
        "- note: the rounds of `onnxruntime:b1:t1` disagree by more than 10% about the "
        "fastest network (round 1: **abroad** fastest, home x2.00); its verdict (on the "
        "medians) is not firm: more --rounds or a quieter machine"]
    rows = table_rows(text)
    assert rows["home"][1] == "2.100 ms x2.00 †" and rows["abroad"][1] == "**1.050 ms x1.00**"
    matrix = json.loads((tmp_path / "x" / "matrix.json").read_text())
    found, away, _ = matrix["networks"]
    assert found["found_for"] == ["torch:b1:t1"] and away["found_for"] == []
    assert found["ms"]["onnxruntime:b1:t1"] == 1.5  # the median of the rounds
    assert found["rounds_ms"]["onnxruntime:b1:t1"] == [2.0, 1.0]
    assert found["spread"] == {"torch:b1:t1": pytest.approx(1.1), "onnxruntime:b1:t1": 2.0}
    assert [c["fastest_per_round"] for c in matrix["columns"]] == [["abroad", "abroad"],
                                                                   ["abroad", "home"]]


def test_cross_latency_rounds_measured(tmp_path):
    archs = [Architecture(small_space(), blocks).save(tmp_path / f"{name}.json")
             for name, blocks in (("light", ("k3e3", "k3e3", "k3e3", "zero")),
                                  ("heavy", ("k5e6",) * 4))]
    run_command("cross-latency", *archs, "--settings", "torch:b1:t1", "--rounds", "2",
                *QUICK_TIMING, "--out", tmp_path / "x")
    matrix = json.loads((tmp_path / "x" / "matrix.json").read_text())
    assert matrix["timing"]["rounds"] == 2
    for network in matrix["networks"]:
        rounds = network["rounds_ms"]["torch:b1:t1"]
        assert len(rounds) == 2 and network["ms"]["torch:b1:t1"] == pytest.approx(sum(rounds) / 2)
        assert network["spread"]["torch:b1:t1"] == pytest.approx(max(rounds) / min(rounds))
    assert len(matrix["columns"][0]["fastest_per_round"]) == 2
    assert "Each setting measured 2 times, the settings interleaved" in \
        (tmp_path / "x" / "matrix.md").read_text()


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


def test_compare_and_cross_latency_are_plain_functions(small_table, tmp_path, capsys):
    """What the commands do, called from Python with plain arguments (no argparse)."""
    from proxyless.latency.cross import cross_latency
    from proxyless.pipeline.pareto import compare_folders

    a = write_run(tmp_path / "a", ("k5e6", "k5e6", "k3e3", "zero"), 82.0, 1.0)
    b = write_run(tmp_path / "b", ("k3e3", "zero", "k3e3", "zero"), 80.0, 0.5,
                  data="cifar10")
    warnings = []
    text = compare_folders([a, b], tmp_path / "cmp", warn=warnings.append)
    assert text == (tmp_path / "cmp" / "compare.md").read_text()
    assert (tmp_path / "cmp" / "compare.png").is_file()
    assert len(warnings) == 1 and "different data sets" in warnings[0]
    assert capsys.readouterr().err == ""  # warned through `warn`, nothing printed
    # a string is one setting and one table, not their characters; "none": predictions only
    text = cross_latency([a, b], tmp_path / "cross", settings="none", tables=small_table)
    matrix = json.loads((tmp_path / "cross" / "matrix.json").read_text())
    assert [c["label"] for c in matrix["columns"]] == ["small.json"] and "small.json" in text
    with pytest.raises(ProxylessError, match="nothing to compare"):
        cross_latency([a], tmp_path / "none", settings=["none"])
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("space", ["fashion", "imagenet", "cifar"])
def test_the_architecture_pictures_legend_covers_no_label(space):
    """arch.png: the kernel legend lies below the drawing, clear of every text (the width
    of the last stage, "160ch", was once under it)."""
    import matplotlib.pyplot as plt

    from proxyless.model.architecture import Architecture
    from proxyless.model.space import load_space
    from proxyless.pipeline.plots import arch_figure

    fig = arch_figure(Architecture.uniform(load_space(space), "k7e6"))
    try:
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent(renderer)
        texts = [t for t in ax.texts if t.get_text()]
        assert any(t.get_text().endswith("ch") for t in texts)
        assert not [t.get_text() for t in texts
                    if t.get_window_extent(renderer).overlaps(legend)]
        assert legend.y1 <= ax.get_window_extent(renderer).y0 + 1  # under the drawing
        assert legend.y0 >= 0  # and inside the picture
    finally:
        plt.close(fig)
