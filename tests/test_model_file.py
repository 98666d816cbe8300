"""Model files: a trained network comes back from `model.pt` alone, and nothing in it runs."""

import pickle

import pytest
import torch

from conftest import Payload
from proxyless import load_model
from proxyless.deploy import MODEL_FORMAT, read_model_file, save_model
from proxyless.errors import ProxylessError


def test_model_file_holds_what_the_network_needs(trained_run):
    state = torch.load(trained_run / "model.pt", weights_only=True)
    assert state["format"] == MODEL_FORMAT
    assert state["input_size"] == 28 and state["in_channels"] == 1
    assert len(state["classes"]) == 10 and state["classes"][0] == "T-shirt/top"
    assert len(state["mean"]) == len(state["std"]) == 1 and state["std"][0] > 0
    assert state["architecture"] == "k3e3 k5e6 | k5e6 zero"
    assert state["data"]["name"] == "fashion-mnist-builtin"
    assert 0 <= state["metrics"]["test_top1"] <= 100


def test_load_model_rebuilds_the_trained_network(trained_run, builtin_subset):
    model = load_model(trained_run)  # a folder; the file itself loads the same
    same = load_model(trained_run / "model.pt")
    assert not model.training and model.arch.encode() == "k3e3 k5e6 | k5e6 zero"
    test = builtin_subset(0, test=200).test
    x = model.preprocess(test.images)
    assert torch.equal(model(x), same(x))
    # the test accuracy the training recorded comes back from the loaded model
    top1 = 100 * (model.predict(test.images) == test.labels).sum().item() / len(test)
    assert top1 == pytest.approx(model.info.metrics["test_top1"], abs=1e-6)


def test_a_run_folder_finds_its_retrained_model(trained_run, tmp_path):
    (tmp_path / "retrain").mkdir()
    (tmp_path / "retrain" / "model.pt").write_bytes((trained_run / "model.pt").read_bytes())
    assert load_model(tmp_path).arch.encode() == "k3e3 k5e6 | k5e6 zero"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProxylessError, match="holds no model.pt"):
        load_model(tmp_path / "empty")
    with pytest.raises(ProxylessError, match="no such model file or run folder"):
        load_model(tmp_path / "elsewhere")


def test_wrong_input_shape_is_a_clear_error(trained_run):
    model = load_model(trained_run)
    with pytest.raises(ProxylessError, match=r"takes N x 1 x H x W images \(resized to 28 x 28\), "
                                             r"got \(2, 3, 28, 28\)"):
        model.preprocess(torch.zeros(2, 3, 28, 28, dtype=torch.uint8))
    with pytest.raises(ProxylessError, match="takes N x 1 x H x W"):
        model.preprocess(torch.zeros(28, 28, dtype=torch.uint8))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_model_file_that_would_run_code_is_refused_and_nothing_runs(trained_run, tmp_path):
    marker = tmp_path / "ran.txt"
    state = torch.load(trained_run / "model.pt", weights_only=True)
    path = tmp_path / "model.pt"
    torch.save({**state, "classes": Payload(marker)}, path)
    with pytest.raises(ProxylessError, match="model file .* other than tensors"):
        load_model(path)
    path.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ProxylessError, match="model file"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("change, message", [
    ({"format": "other/1"}, "not a proxyless model file"),
    ({"mean": [0.1, 0.2]}, "mean: expected 1 finite numbers"),
    ({"std": [0.0]}, "std: expected 1 positive"),
    ({"std": [float("nan")]}, "std: expected 1 positive"),
    ({"classes": ["a"]}, "classes must be 10 names"),
    ({"input_size": 32}, "input_size 32 disagrees"),
    ({"weights": {"x": torch.zeros(1)}}, "weights do not fit its architecture"),
    ({"weights": [1, 2]}, "'weights' is not a mapping of tensors"),
    ({"arch": {"blocks": ["k3e3"]}}, "arch: needs the keys 'space' and 'blocks'"),
    ({"metrics": "good"}, "metrics must be a mapping"),
    # data and metrics go into JSON (exports' metadata, reports): plain JSON values only
    ({"metrics": {"test_top1": torch.tensor(90.0)}},
     r"metrics\['test_top1'\] must be plain JSON data .*got a Tensor"),
    ({"data": {"name": "x", "extra": [1, {"deep": torch.zeros(2)}]}},
     r"data\['extra'\]\[1\]\['deep'\] must be plain JSON data"),
    ({"metrics": {3: 1.0}}, "metrics: key 3 must be text"),
])
def test_damaged_model_files_are_clear_errors(trained_run, tmp_path, change, message):
    state = torch.load(trained_run / "model.pt", weights_only=True)
    path = tmp_path / "model.pt"
    torch.save({**state, **change}, path)
    with pytest.raises(ProxylessError, match=message):
        load_model(path)


def test_an_older_model_file_says_to_retrain(trained_run, tmp_path):
    state = torch.load(trained_run / "model.pt", weights_only=True)
    path = tmp_path / "model.pt"
    torch.save({"arch": state["arch"], "model": state["weights"]}, path)
    with pytest.raises(ProxylessError, match="earlier proxyless.*retrain"):
        load_model(path)


def test_save_then_read_round_trips(trained_run, tmp_path):
    info, weights, _ = read_model_file(trained_run)
    model = load_model(trained_run)
    save_model(tmp_path / "again.pt", model.net, info)
    info2, weights2, _ = read_model_file(tmp_path / "again.pt")
    assert info2 == info and all(torch.equal(weights[k], weights2[k]) for k in weights)


def test_plain_json_data_and_metrics_are_accepted(trained_run, tmp_path):
    state = torch.load(trained_run / "model.pt", weights_only=True)
    plain = {"test_top1": 91.5, "epochs": 3, "ok": True, "note": None,
             "curve": [1.0, 2], "nested": {"a": ["b", {"c": 1.5}]}}
    path = tmp_path / "model.pt"
    torch.save({**state, "metrics": plain}, path)
    assert load_model(path).info.metrics == plain
