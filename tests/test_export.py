"""Exports carry the model: same metadata, same logits, same accuracy; bad files are refused."""

import argparse
import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from proxyless import load_model
from proxyless.deploy import save_model
from proxyless.deploy.evaluate import add_evaluate_parser, cmd_evaluate, evaluate_file
from proxyless.deploy.export import (
    METADATA_KEY,
    add_export_parser,
    cmd_export,
    compare_logits,
    export_model,
    int8_path,
    load_exported,
)
from proxyless.errors import ProxylessError
from proxyless.latency import LatencyTable, latency_model
from proxyless.latency.table import Entry
from proxyless.walk import candidate_layers, fixed_layers


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
            "torchscript": export_model(model, folder / "model.pt", "torchscript")}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_export_round_trips_metadata_and_logits(fmt, exports, trained_run, builtin_subset):
    model = load_model(trained_run)
    exported = load_exported(exports[fmt])
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
    assert 0 <= int8["top1"] <= 100 and int8["latency_ms"] > 0
    assert 0 <= int8["same_top1_as_fp32"] <= 100 and int8["calibration_images"] == 256
    assert report["verified"] and report["same_top1"] == report["verify_images"] == 100
    assert set(report["latency_ms"]) == {"pytorch", "onnx", "onnx int8"}
    quantized = load_exported(int8["file"])
    assert quantized.info.to_metadata() == load_model(trained_run).info.to_metadata()


def test_int8_with_torchscript_is_refused_before_work(trained_run, tmp_path):
    out = tmp_path / "net.pt"
    with pytest.raises(ProxylessError, match="--int8 .* --format onnx"):
        run_command(["export", str(trained_run), "--format", "torchscript", "--out",
                     str(out), "--int8"])
    assert not out.exists()


def _run_folder_with_table(trained_run, folder):
    """A `run` folder's layout: retrain/model.pt beside a latency table of its space."""
    (folder / "retrain").mkdir(parents=True)
    (folder / "retrain" / "model.pt").write_bytes((trained_run / "model.pt").read_bytes())
    space = load_model(trained_run).info.arch.space
    keys = [layer.key for layer in fixed_layers(space)] + [
        layer.key for row in candidate_layers(space) for layer in row if layer.key]
    table = LatencyTable({key: Entry(0.1 + i / 100) for i, key in enumerate(keys)},
                         {"backend": "onnxruntime", "threads": 1, "batch": 1,
                          "space": space.to_dict()})
    table.save(folder / "latency_table.json")
    return table


def test_a_run_folder_gives_the_predicted_latency(trained_run, tmp_path, capsys):
    table = _run_folder_with_table(trained_run, tmp_path / "run")
    assert run_command(["export", str(tmp_path / "run"), "--out", str(tmp_path / "n.onnx"),
                        "--json", "--verify-images", "20", "--latency-time", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    arch = load_model(trained_run).info.arch
    assert report["predicted_ms"] == pytest.approx(latency_model(table).predict(arch))
    assert report["table_backend"] == "onnxruntime"
    assert report["latency_ms"]["pytorch"] > 0 and report["latency_ms"]["onnx"] > 0


def test_a_failed_verification_keeps_the_file_and_exits_1(trained_run, tmp_path, capsys,
                                                         monkeypatch):
    from proxyless.deploy import export

    real = export.pytorch_logits
    monkeypatch.setattr(export, "pytorch_logits", lambda model, x: real(model, x) + 0.5)
    out = tmp_path / "net.pt"
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
    assert evaluate_file(exports["torchscript"])["test_top1"] == model["test_top1"]
    assert abs(evaluate_file(exports["onnx"])["test_top1"] - model["test_top1"]) <= 0.5
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
    script = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), str(script))
    with pytest.raises(ProxylessError, match="plain.pt carries no proxyless metadata"):
        load_exported(script)
    noise = tmp_path / "x.onnx"
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(ProxylessError, match="x.onnx"):
        evaluate_file(noise)
    with pytest.raises(ProxylessError, match="no such file"):
        load_exported(tmp_path / "missing.onnx")


def test_damaged_exports_are_refused(exports, tmp_path):
    for fmt, name in (("torchscript", "cut.pt"), ("onnx", "cut.onnx")):
        cut = tmp_path / name
        cut.write_bytes(exports[fmt].read_bytes()[:3000])
        with pytest.raises(ProxylessError, match=name):
            load_exported(cut)


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
