"""`proxyless run` end to end on a tiny space: profile, search, retrain, report, resume."""

import json

import pytest
import torch

from proxyless import load_space
from proxyless.data import DataSplits
from proxyless.deploy.model_file import read_model_file
from proxyless.errors import ProxylessError
from proxyless.latency.profile import ProfileSetting
from proxyless.model.architecture import decode
from proxyless.model.space import SearchSpace, StageSpec
from proxyless.model.supernet import SuperNet
from proxyless.pipeline.run import RunConfig, run_pipeline
from proxyless.search import SearchConfig
from proxyless.training.trainer import TrainConfig


def tiny_space() -> SearchSpace:
    return SearchSpace(name="tiny-run", input_size=28, in_channels=1, num_classes=10,
                       stem=load_space("fashion").stem,
                       stages=(StageSpec(16, 2, 2), StageSpec(24, 1, 2)),
                       candidates=("k3e3", "k5e6", "zero"), feature_mix=32)


@pytest.fixture(scope="module")
def tiny_data(builtin_subset) -> DataSplits:
    return builtin_subset(500, 100)


def run_config() -> RunConfig:
    return RunConfig(SearchConfig(warmup_epochs=1, epochs=2, batch_size=50, arch_every=1,
                                  eval_limit=100),
                     TrainConfig(epochs=1, batch_size=50),
                     profile=ProfileSetting(min_time=0.01, calibration_networks=8))


def test_run_profiles_searches_retrains_and_reports(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setenv("PROXYLESS_CACHE", str(tmp_path / "cache"))
    space, logs = tiny_space(), []
    results = run_pipeline(space, tiny_data, run_config(), tmp_path / "run", progress=False,
                           log=logs.append)
    out = tmp_path / "run"
    for name in ("report.md", "results.json", "latency_table.json", "retrain.png",
                 "search/arch.json", "search/summary.json", "search/probs.png",
                 "search/arch.png", "retrain/final.json"):
        assert (out / name).exists(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["arch"] == results.arch
    # the search's hold-out (there for α) trains the derived network too, and both say so
    assert (saved["search_train_images"], saved["search_val_images"]) == (500, 100)
    assert saved["train_images"] == 600 and saved["retrain_init"] == "scratch"
    final = json.loads((out / "retrain" / "final.json").read_text())
    assert final["train_images"] == 600
    assert saved["measured_ms"] > 0 and saved["predicted_ms"] > 0
    lo_hi = [line for line in logs if line.startswith("latency target")]
    assert lo_hi and results.target_ms > 0
    report = (out / "report.md").read_text()
    assert "500 training images for the weights, 100 held out for α" in report
    assert "retrained on all 600 training images (from scratch, dropout 0.1)" in report
    row = next(line for line in report.splitlines() if line.startswith("| architecture"))
    assert row.count(" | ") == 1 and results.arch.replace("|", "\\|") in row  # one cell
    assert list((tmp_path / "cache" / "tables").glob("tiny-run-*.json"))
    # by default the search prices ONNX Runtime at batch 1 on one thread, and says so; the
    # retrained network is measured in every runtime (its exports kept beside model.pt)
    assert results.backend == "onnxruntime"
    assert results.priced["runtime"] == "ONNX Runtime" and results.priced["batch"] == 1
    assert results.priced["threads"] == 1
    assert list(results.runtimes_ms) == ["torch", "onnxruntime", "onnxruntime int8"]
    assert all(ms > 0 for ms in results.runtimes_ms.values())
    assert (out / "retrain" / "model.onnx").is_file()
    assert (out / "retrain" / "model.int8.onnx").is_file()
    summary = json.loads((out / "search" / "summary.json").read_text())
    assert summary["priced"]["runtime"] == "ONNX Runtime"
    assert "The search priced **ONNX Runtime** latency (batch 1, 1 thread(s)" in report
    assert "| ONNX Runtime, fp32 (priced) |" in report and "| PyTorch (eager), fp32 |" in report
    # how good the table is: its calibration's networks, each predicted without it
    left_out = results.latency_model["left_out"]
    assert left_out["networks"] == run_config().profile.calibration_networks
    assert 0 <= left_out["within_10pct"] <= 100 and left_out["mape"] >= 0
    assert "## How good the latency model is" in report
    assert f"- On {left_out['networks']} of its calibration networks" in report

    # a run folder is never overwritten; --resume reuses this run's table and target
    with pytest.raises(ProxylessError, match="--resume"):
        run_pipeline(space, tiny_data, run_config(), out, progress=False, log=logs.append)
    logs.clear()
    again = run_pipeline(space, tiny_data, run_config(), out, resume=True, progress=False,
                         log=logs.append)
    assert any("reusing this run's" in line for line in logs)
    assert again.target_ms == results.target_ms and again.arch == results.arch


def test_run_with_the_reinforce_strategy(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setenv("PROXYLESS_CACHE", str(tmp_path / "cache"))
    config = run_config()
    config.search.strategy, config.search.reinforce_samples = "reinforce", 4
    config.retrain_init = "supernet"  # and the retraining fine-tunes the supernet's paths
    logs = []
    results = run_pipeline(tiny_space(), tiny_data, config, tmp_path / "run", progress=False,
                           log=logs.append)
    assert results.measured_ms > 0 and results.test_top1 >= 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "reinforce strategy (4 architectures per update" in report
    derived = tmp_path / "run" / "search" / "derived.pt"
    assert any(f"starts from the supernet's weights ({derived})" in line for line in logs)
    assert results.retrain_init == "supernet" and "(from the supernet's weights" in report
    # the file holds the supernet's weights of the derived paths, and trains as a model file
    supernet = SuperNet(tiny_space())
    supernet.load_state_dict(torch.load(tmp_path / "run" / "search" / "checkpoint.pt",
                                        weights_only=True)["supernet"])
    expected = supernet.derived_network(decode(tiny_space(), results.arch)).state_dict()
    info, weights, _ = read_model_file(derived)
    assert info.arch.encode() == results.arch
    assert all(torch.equal(weights[k], v) for k, v in expected.items())


def test_run_searches_for_torch_throughput_and_a_given_table(tmp_path, tiny_data,
                                                             monkeypatch):
    """The latency a run searches for is the user's choice: another runtime and batch (then
    measured alike at the end), or a table made elsewhere (no profiling at all)."""
    from dataclasses import replace

    monkeypatch.setenv("PROXYLESS_CACHE", str(tmp_path / "cache"))
    config = replace(run_config(), profile=ProfileSetting("torch", batch=4, min_time=0.01,
                                                          calibration_networks=8))
    results = run_pipeline(tiny_space(), tiny_data, config, tmp_path / "torch", progress=False,
                           log=lambda m: None)
    table = json.loads((tmp_path / "torch" / "latency_table.json").read_text())
    assert (table["meta"]["backend"], table["meta"]["batch"]) == ("torch", 4)
    assert (results.backend, results.batch) == ("torch", 4)
    assert results.priced["runtime"] == "PyTorch (eager)"
    assert results.runtimes_setting["batch"] == 4  # every runtime at the priced batch
    assert results.measured_ms > 0
    report = (tmp_path / "torch" / "report.md").read_text()
    assert "batch 4, torch" in report and "| PyTorch (eager), fp32 (priced) |" in report

    logs = []
    given = replace(config, table=str(tmp_path / "torch" / "latency_table.json"))
    again = run_pipeline(tiny_space(), tiny_data, given, tmp_path / "given", progress=False,
                         log=logs.append)
    assert any("(given)" in line for line in logs)
    assert not any("profiling" in line for line in logs)
    assert again.target_ms == results.target_ms  # same table, same default target
    with pytest.raises(ProxylessError):
        run_pipeline(load_space("fashion"), tiny_data, given, tmp_path / "other",
                     progress=False, log=logs.append)
