"""Training a derived network: it learns, it writes its files, it resumes exactly."""

import json

import pytest
import torch

from conftest import interrupted_in_epoch, read_events
from proxyless import Architecture, build_network, load_space
from proxyless.config_io import to_dict
from proxyless.errors import ProxylessError
from proxyless.training.trainer import TrainConfig, train_network


@pytest.mark.slow
def test_short_training_beats_chance_by_a_wide_margin(tmp_path, builtin_subset):
    arch = Architecture.uniform(load_space("fashion"), "k3e3")
    config = TrainConfig(epochs=2, batch_size=64, lr=0.1, seed=0)
    final = train_network(arch, builtin_subset(3000, 0, 1000), config, tmp_path, progress=False)
    assert final.test_top1 > 55.0  # chance is 10%
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    saved = json.loads((tmp_path / "final.json").read_text())
    assert {"test_top1", "params", "macs"} <= saved.keys()
    assert saved["params"] == sum(p.numel() for p in build_network(arch).parameters())
    assert saved["macs"] > 0


def test_resume_after_interruption_is_exact(tmp_path, builtin_subset, monkeypatch):
    arch = Architecture.uniform(load_space("fashion"), "k3e3")
    data = builtin_subset(256, 0, 100)
    config = TrainConfig(epochs=3, batch_size=64, seed=3, log_every=2)
    full = train_network(arch, data, config, tmp_path / "a", progress=False)

    with interrupted_in_epoch(monkeypatch, 2), pytest.raises(KeyboardInterrupt):
        train_network(arch, data, config, tmp_path / "b", progress=False)
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 1
    with pytest.raises(ProxylessError, match="--resume"):
        train_network(arch, data, config, tmp_path / "b", progress=False)
    resumed = train_network(arch, data, config, tmp_path / "b", resume=True, progress=False)

    assert resumed.test_top1 == full.test_top1
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["weights"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["weights"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    # TensorBoard: the stopped process had logged part of epoch 2; the resumed one's curves
    # replace it, so each tag holds every step once, with the uninterrupted run's values
    before, after = read_events(tmp_path / "a")["scalars"], read_events(tmp_path / "b")["scalars"]
    assert len(list((tmp_path / "b").glob("events.out.tfevents.*"))) == 2
    assert before.keys() == after.keys()
    for tag in before.keys() - {"epoch/epoch_time_s"}:
        assert after[tag] == before[tag], tag
    assert [step for step, _ in after["train/loss"]] == [2, 4, 6, 8, 10, 12]


def test_resume_refuses_other_settings(tmp_path, builtin_subset):
    arch = Architecture.uniform(load_space("fashion"), "k3e3")
    data = builtin_subset(128, 0, 50)
    train_network(arch, data, TrainConfig(epochs=1, batch_size=64), tmp_path, progress=False)
    with pytest.raises(ProxylessError, match="lr"):
        train_network(arch, data, TrainConfig(epochs=1, batch_size=64, lr=0.3), tmp_path,
                      resume=True, progress=False)
    other = Architecture.uniform(load_space("fashion"), "k5e3")
    with pytest.raises(ProxylessError, match="another architecture"):
        train_network(other, data, TrainConfig(epochs=1, batch_size=64), tmp_path,
                      resume=True, progress=False)


def test_wrong_channel_count_is_a_clear_error(tmp_path, builtin_subset):
    arch = Architecture.uniform(load_space("cifar"), "k3e3")
    with pytest.raises(ProxylessError, match="channel"):
        train_network(arch, builtin_subset(64, 0, 10), TrainConfig(epochs=1, batch_size=32),
                      tmp_path, progress=False)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, builtin_subset):
    arch = Architecture.uniform(load_space("fashion"), "k3e3")
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ProxylessError, match="cannot be read"):
        train_network(arch, builtin_subset(64, 0, 10), TrainConfig(epochs=1, batch_size=32),
                      tmp_path, resume=True, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"not a checkpoint"  # nothing lost


def test_a_setting_added_since_the_checkpoint_counts_as_its_default():
    from proxyless.engine.epochs import changed_settings
    from proxyless.search import SearchConfig

    saved = {"config": {k: v for k, v in to_dict(SearchConfig()).items()
                        if k != "weight_sharing"}}  # written before weight_sharing existed
    assert changed_settings(saved, SearchConfig(), ()) == []
    assert changed_settings(saved, SearchConfig(weight_sharing="entangled"), ()) == \
        ["weight_sharing"]


def test_a_checkpoint_with_missing_or_wrong_contents_is_a_clear_error(tmp_path, builtin_subset):
    arch = Architecture.uniform(load_space("fashion"), "k3e3")
    data, cfg = builtin_subset(64, 0, 10), TrainConfig(epochs=1, batch_size=32)
    train_network(arch, data, cfg, tmp_path, progress=False)
    good = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    damaged = [({k: v for k, v in good.items() if k != "optimizer"}, "lacks optimizer"),
               ({**good, "epoch": "x"}, "do not fit together"),
               ({**good, "metrics": 5}, "do not fit together"),
               ({**good, "model": {"x": torch.zeros(2)}}, "'model' that does not fit")]
    for state, message in damaged:
        torch.save(state, tmp_path / "checkpoint.pt")
        with pytest.raises(ProxylessError, match=message):
            train_network(arch, data, cfg, tmp_path, resume=True, progress=False)


def test_init_from_a_model_file_of_another_architecture_is_a_clear_error(tmp_path,
                                                                         builtin_subset):
    from proxyless.deploy.model_file import ModelInfo, save_model

    space = load_space("fashion")
    data = builtin_subset(100, 0, 50)
    other = tmp_path / "other.pt"
    save_model(other, build_network(Architecture.uniform(space, "k5e6")),
               ModelInfo(Architecture.uniform(space, "k5e6"), data.mean, data.std,
                         data.train.classes))
    config = TrainConfig(epochs=1, batch_size=50, init_from=str(other))
    with pytest.raises(ProxylessError, match=r"--init-from .*other.pt: its architecture"):
        train_network(Architecture.uniform(space, "k3e3"), data, config, tmp_path / "run",
                      progress=False, log=lambda m: None)
