"""Exports carry the model: same metadata, same logits, same accuracy; bad files are refused."""

import argparse
import dataclasses
import json
import os

import numpy as np
import onnx
import pytest
import torch

from proxyless import load_model
from proxyless.cli.deploy import (
    add_evaluate_parser,
    add_export_parser,
    cmd_evaluate,
    cmd_export,
    describe_export,
    describe_table,
)
from proxyless.deploy import save_model
from proxyless.deploy.classifier import load_exported
from proxyless.deploy.evaluate import evaluate_file
from proxyless.deploy.int8 import int8_path
from proxyless.deploy.timing import measure_on_table, table_setting
from proxyless.deploy.verify import compare_logits
from proxyless.deploy.write import METADATA_KEY, export_model
from proxyless.errors import ProxylessError
from proxyless.latency import LatencyTable, latency_model
from proxyless.latency.table import Entry
from proxyless.model.layers import candidate_layers, fixed_layers


def run_command(argv: list[str]) -> int:
    """`proxyless export|evaluate ...` through this module's own parser, as the CLI does."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_export_parser(sub)
    add_evaluate_parser(sub)
    args = parser.parse_args(argv)
    return {"export": cmd_export, "evaluate": cmd_evaluate}[args.command](args)


@pytest.fixture(scope="module")
def exports(trained_run, tmp_path_factory):
    """The trained model written once in each format: {"onnx": path, "torchscript": path}."""
    folder = tmp_path_factory.mktemp("exports")
    model = load_model(trained_run)
    return {"onnx": export_model(model, folder / "model.onnx", "onnx"),
            "torchscript": export_model(model, folder / "model.torchscript", "torchscript")}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_export_round_trips_metadata_and_logits(fmt, exports, trained_run, builtin_subset):
    model = load_model(trained_run)
    exported = load_exported(exports[fmt], trust_code=True)
    assert exported.format == fmt
    assert exported.info.to_metadata() == model.info.to_metadata()
    meta = exported.info.to_metadata()
    assert meta["architecture"] == "k3e3 k5e6 | k5e6 zero" and meta["input_size"] == 28
    assert len(meta["classes"]) == 10 and meta["mean"] == list(model.info.mean)
    test = builtin_subset(0, test=200).test
    x = model.preprocess(test.images)
    with torch.no_grad():
        reference = model(x).numpy()
    logits = exported.logits(x.numpy())
    assert np.max(np.abs(logits - reference)) <= 1e-4
    assert np.array_equal(logits.argmax(1), reference.argmax(1))
    assert np.array_equal(exported.predict_images(test.images), reference.argmax(1))
    assert exported.logits(x[:1].numpy()).shape == (1, 10)  # the batch axis is free


def test_onnx_metadata_is_readable_without_proxyless(exports, trained_run):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(exports["onnx"])).metadata_props}
    assert props["architecture"] == "k3e3 k5e6 | k5e6 zero"
    assert json.loads(props["classes"])[0] == "T-shirt/top"
    assert json.loads(props[METADATA_KEY]) == load_model(trained_run).info.to_metadata()


def test_export_command_verifies_and_times(trained_run, tmp_path, capsys):
    out = tmp_path / "net.onnx"
    assert run_command(["export", str(trained_run), "--out", str(out), "--verify-images", "50",
                        "--latency-time", "0"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "verified on 50 test images of fashion-mnist-builtin" in text
    assert "same top-1 on 50/50" in text and "max |logit difference|" in text
    for line in ("pytorch (measured)", "onnx (measured)", "n/a (give --table)"):
        assert line in text


def test_int8_is_quantized_and_reported(trained_run, tmp_path, capsys):
    out = tmp_path / "net.onnx"
    assert run_command(["export", str(trained_run), "--out", str(out), "--int8", "--json",
                        "--verify-images", "100", "--latency-time", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    int8 = report["int8"]
    assert int8["file"] == str(int8_path(out)) == str(tmp_path / "net.int8.onnx")
    assert report["verified"] and report["same_top1"] == report["verify_images"] == 100
    # int8 keeps the fp32 model's decisions: nearly every image, nearly the same accuracy
    assert int8["same_top1_as_fp32"] >= 0.95 * report["verify_images"]
    assert int8["calibration_images"] == 256
    assert abs(int8["top1"] - report["top1_export"]) <= 3 and "top1_fp32" not in int8
    assert int8["latency_ms"] > 0
    assert set(report["latency_ms"]) == {"pytorch", "onnx", "onnx int8"}
    ops = {node.op_type for node in onnx.load(int8["file"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # quantized, not an fp32 copy
    quantized = load_exported(int8["file"])
    assert quantized.info.to_metadata() == load_model(trained_run).info.to_metadata()


def test_int8_with_torchscript_is_refused_before_work(trained_run, tmp_path):
    out = tmp_path / "net.pt"
    with pytest.raises(ProxylessError, match="--int8 .* --format onnx"):
        run_command(["export", str(trained_run), "--format", "torchscript", "--out",
                     str(out), "--int8"])
    assert not out.exists()


def _table_of(model_space, **meta):
    """A latency table covering `model_space`, with `meta` as its provenance."""
    keys = [layer.key for layer in fixed_layers(model_space)] + [
        layer.key for row in candidate_layers(model_space) for layer in row if layer.key]
    return LatencyTable({key: Entry(0.1 + i / 100) for i, key in enumerate(keys)},
                        {"space": model_space.to_dict(), **meta})


def _run_folder_with_table(trained_run, folder):
    """A `run` folder's layout: retrain/model.pt beside a latency table of its space, measured
    here (no CPU recorded: `timer_for` takes it for this machine's)."""
    (folder / "retrain").mkdir(parents=True)
    (folder / "retrain" / "model.pt").write_bytes((trained_run / "model.pt").read_bytes())
    table = _table_of(load_model(trained_run).info.arch.space, backend="onnxruntime", threads=1,
                      batch=1)
    table.save(folder / "latency_table.json")
    return table


def test_a_run_folder_gives_the_predicted_and_comparable_measured_latency(trained_run,
                                                                         tmp_path, capsys):
    table = _run_folder_with_table(trained_run, tmp_path / "run")
    assert run_command(["export", str(tmp_path / "run"), "--out", str(tmp_path / "n.onnx"),
                        "--json", "--verify-images", "20", "--latency-time", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    arch = load_model(trained_run).info.arch
    assert report["predicted_ms"] == pytest.approx(latency_model(table).predict(arch))
    assert report["table_setting"] == {"backend": "onnxruntime", "threads": 1, "batch": 1}
    assert report["table_comparable"] and report["measured_on_table_ms"] > 0
    assert report["speed_factor"] == pytest.approx(1.0)  # the table has no anchor: this is it
    assert report["latency_ms"]["pytorch"] > 0 and report["latency_ms"]["onnx"] > 0
    text = describe_export(report)
    assert "(onnxruntime, 1 thread(s), batch 1), on the table's time base:" in text
    assert "measured (table setting)" in text and "None" not in text


def test_a_table_from_elsewhere_is_labelled_not_comparable(trained_run, tmp_path, capsys):
    space = load_model(trained_run).info.arch.space
    _table_of(space, backend="torch", threads=2, batch=4, cpu="Another CPU",
              device="cpu").save(tmp_path / "table.json")
    assert run_command(["export", str(trained_run), "--out", str(tmp_path / "n.onnx"),
                        "--table", str(tmp_path / "table.json"), "--json",
                        "--verify-images", "20", "--latency-time", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["predicted_ms"] > 0 and report["measured_on_table_ms"] is None
    assert report["table_comparable"] is False
    assert "measured on 'Another CPU'" in report["table_not_comparable_because"]
    text = describe_export(report)
    assert ("(Another CPU: torch, 2 thread(s), batch 4), not comparable with this CPU's "
            "figures:") in text
    assert "ms per batch of 4" in text and "None" not in text


def test_the_reference_table_is_labelled_with_its_device(trained_run):
    from proxyless.latency.table import from_reference

    arch = load_model(trained_run).info.arch
    meta = {k: v for k, v in from_reference({}).meta.items() if k != "space"}
    pixel = _table_of(arch.space, **meta)  # the authors' Pixel 1 provenance, our space's keys
    report = {"table": "mobile_trim.yaml", "predicted_ms": 1.0,
              "table_setting": table_setting(pixel.meta),
              **measure_on_table(pixel, arch, 0.0)}
    assert report["measured_on_table_ms"] is None and not report["table_comparable"]
    lines = describe_table(report)
    assert "Pixel 1, TFLite): tflite, batch 1), not comparable with this CPU's" in lines[0]
    assert "thread" not in lines[0]  # it records no thread count, and none is made up
    assert "no measurement: the table was not measured on this machine" in lines[2]
    assert "None" not in "\n".join(lines)


def test_a_failed_verification_keeps_the_file_and_exits_1(trained_run, tmp_path, capsys,
                                                         monkeypatch):
    from proxyless.deploy import export

    real = export.pytorch_classifier

    def shifted(model, path):
        reference = real(model, path)
        return dataclasses.replace(reference, run=lambda x: reference.run(x) + 0.5)
    monkeypatch.setattr(export, "pytorch_classifier", shifted)
    out = tmp_path / "net.torchscript"
    assert run_command(["export", str(trained_run), "--format", "torchscript", "--out",
                        str(out), "--verify-images", "20", "--latency-time", "0"]) == 1
    err = capsys.readouterr().err
    assert "max |logit difference| 5.00e-01 exceeds 0.0001" in err and "kept" in err
    assert out.is_file()


def test_compare_logits_counts_disagreement_and_nan():
    reference = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    labels = np.array([0, 1])
    assert compare_logits(reference, reference.copy(), labels)["verified"]
    swapped = compare_logits(reference, reference[:, ::-1].copy(), labels)
    assert swapped["same_top1"] == 0 and swapped["top1_export"] == 0 and not swapped["verified"]
    broken = compare_logits(reference, reference * np.nan, labels)
    assert broken["max_abs_diff"] is None and not broken["verified"]


def test_evaluate_agrees_on_the_model_and_its_exports(trained_run, exports, capsys):
    model = evaluate_file(trained_run)
    assert model["data"] == "fashion-mnist-builtin" and model["test_images"] == 1000
    # the first 200 test images are those the training tested on
    recorded = load_model(trained_run).info.metrics["test_top1"]
    assert evaluate_file(trained_run, images=200)["test_top1"] == pytest.approx(recorded)
    # verification demands the same top-1 on every image, so the same test top-1
    assert evaluate_file(exports["torchscript"], trust_code=True)["test_top1"] == \
        model["test_top1"]
    assert evaluate_file(exports["onnx"])["test_top1"] == model["test_top1"]
    assert run_command(["evaluate", str(exports["onnx"]), "--images", "100", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_images"] == 100 and result["model"] == str(exports["onnx"])
    assert {"test_top1", "data"} <= set(result)


def test_recorded_data_missing_here_says_pass_data(trained_run, tmp_path):
    model = load_model(trained_run)
    info = dataclasses.replace(model.info, data={"name": "fashion-mnist",
                                                 "source": str(tmp_path)})
    save_model(tmp_path / "model.pt", model.net, info)
    with pytest.raises(ProxylessError, match="cannot be read on this machine.*--data"):
        evaluate_file(tmp_path / "model.pt")
    assert evaluate_file(tmp_path / "model.pt", data="builtin", images=10)["test_images"] == 10


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.onnx/jit
def test_files_without_our_metadata_or_not_models_are_refused(tmp_path):
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Conv2d(1, 2, 3), (torch.zeros(1, 1, 28, 28),), str(plain),
                      dynamo=False)
    with pytest.raises(ProxylessError, match="plain.onnx carries no proxyless metadata"):
        load_exported(plain)
    script = tmp_path / "plain.torchscript"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), str(script))
    with pytest.raises(ProxylessError, match="plain.torchscript carries no proxyless metadata"):
        load_exported(script, trust_code=True)
    noise = tmp_path / "x.onnx"
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(ProxylessError, match="x.onnx"):
        evaluate_file(noise)
    with pytest.raises(ProxylessError, match="no such file"):
        load_exported(tmp_path / "missing.onnx")


def test_damaged_exports_are_refused(exports, tmp_path):
    for fmt, name in (("torchscript", "cut.torchscript"), ("onnx", "cut.onnx")):
        cut = tmp_path / name
        cut.write_bytes(exports[fmt].read_bytes()[:3000])
        with pytest.raises(ProxylessError, match=name):
            load_exported(cut, trust_code=True)


def test_bad_out_paths_are_refused_before_export(trained_run, tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(ProxylessError, match="afile is a file"):
        run_command(["export", str(trained_run), "--out", str(tmp_path / "afile" / "m.onnx")])
    with pytest.raises(ProxylessError, match="the model file itself"):
        run_command(["export", str(trained_run), "--out", str(trained_run / "model.pt")])
    with pytest.raises(ProxylessError, match="named .onnx"):
        run_command(["export", str(trained_run), "--format", "torchscript", "--out",
                     str(tmp_path / "m.onnx")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_torchscript_runs_only_with_trust_code(trained_run, tmp_path, capsys):
    """A TorchScript file holds code; named model.pt, it is told apart from a model file by
    content, and evaluated only with --trust-code."""
    script = export_model(load_model(trained_run), tmp_path / "model.pt", "torchscript")
    with pytest.raises(ProxylessError, match="model.pt is a TorchScript file, whose code runs "
                                             "when loaded and called; pass --trust-code"):
        run_command(["evaluate", str(script), "--images", "20"])
    with pytest.raises(ProxylessError, match="TorchScript file"):
        load_exported(script)
    assert run_command(["evaluate", str(script), "--images", "20", "--trust-code",
                        "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["format"] == "torchscript" and result["test_images"] == 20


def _external(name: str) -> onnx.TensorProto:
    """A float tensor whose data ONNX Runtime would read from the file `name`."""
    tensor = onnx.helper.make_tensor(name, onnx.TensorProto.FLOAT, [4], [0.0] * 4)
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", name
    return tensor


def _constant(output: str, name: str) -> onnx.NodeProto:
    return onnx.helper.make_node("Constant", [], [output], value=_external(name))


def _with_external_constant(proto: onnx.ModelProto, where: str) -> None:
    """Add a tensor that points to external data: in a Constant node's attribute, in the
    body of an If node (a graph in an attribute), or as a sparse initializer's values."""
    graph = proto.graph
    if where == "attribute":
        graph.node.append(_constant("leak", "secret.bin"))
    elif where == "subgraph":
        branch = onnx.helper.make_graph(
            [_constant("inner", "secret.bin")], "branch", [],
            [onnx.helper.make_tensor_value_info("inner", onnx.TensorProto.FLOAT, [4])])
        graph.node.append(onnx.helper.make_node("Constant", [], ["flag"],
                                                value=onnx.helper.make_tensor(
                                                    "flag", onnx.TensorProto.BOOL, [], [True])))
        graph.node.append(onnx.helper.make_node("If", ["flag"], ["leak"],
                                                then_branch=branch, else_branch=branch))
    else:
        indices = onnx.helper.make_tensor("indices", onnx.TensorProto.INT64, [1], [0])
        graph.sparse_initializer.append(
            onnx.helper.make_sparse_tensor(_external("sparse"), indices, [8]))


@pytest.mark.parametrize("where", ["attribute", "subgraph", "sparse"])
def test_onnx_external_data_anywhere_is_refused(exports, tmp_path, where):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    proto = onnx.load(str(exports["onnx"]))
    _with_external_constant(proto, where)
    crafted = tmp_path / "crafted.onnx"
    crafted.write_bytes(proto.SerializeToString())
    with pytest.raises(ProxylessError, match="crafted.onnx refers to tensor data in other files"):
        load_exported(crafted)


def test_a_model_trained_on_resized_images_evaluates_and_exports(builtin_subset, tmp_path,
                                                                 capsys):
    """Training resizes 28x28 images to a 32x32 space's input; evaluation and exports must
    feed the model the same way."""
    import dataclasses as dc

    from conftest import small_space
    from proxyless.model.architecture import Architecture
    from proxyless.training.trainer import TrainConfig, train_network

    space = dc.replace(small_space(), input_size=32)
    out = tmp_path / "run"
    train_network(Architecture(space, ("k3e3", "k5e6", "k3e3", "zero")), builtin_subset(300),
                  TrainConfig(epochs=1, batch_size=50, seed=0), out, progress=False,
                  log=lambda m: None)
    capsys.readouterr()  # the training's epoch line
    model = load_model(out)
    assert model.preprocess(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 1, 32, 32)
    result = evaluate_file(out, images=200)  # the 200 test images the training tested on
    assert result["test_top1"] == pytest.approx(model.info.metrics["test_top1"], abs=1e-6)
    onnx_file = tmp_path / "model.onnx"
    assert run_command(["export", str(out), "--out", str(onnx_file), "--verify-images", "50",
                        "--latency-time", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"]
    assert evaluate_file(onnx_file, images=200)["test_top1"] == result["test_top1"]
