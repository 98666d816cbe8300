"""Shared fixtures. Tests run on the CPU with few threads so the suite stays fast on 2 cores."""

from __future__ import annotations

import contextlib
import json
import struct
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from proxyless import Architecture, load_space
from proxyless.data import DataSplits, load_data, split_validation
from proxyless.data.formats import read_idx

torch.set_num_threads(2)

REFERENCE = Path(str(resources.files("proxyless") / "reference"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch) -> None:
    """Tables and image-folder indexes go to a cache of the test session's, never the
    user's (a test that needs its own sets PROXYLESS_CACHE again)."""
    monkeypatch.setenv("PROXYLESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def reference_dir() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def builtin_subset():
    """`builtin_subset(train, val=0, test=200)`: a seeded subset of the built-in data set, with
    `val` images held out of `train + val` drawn ones, and the first `test` test images."""
    data = load_data("builtin", notify=None)

    def make(train: int, val: int = 0, test: int = 200) -> DataSplits:
        g = torch.Generator().manual_seed(0)
        drawn = data.train.subset(torch.randperm(len(data.train), generator=g)[:train + val])
        kept, held = split_validation(drawn, val, seed=0)
        return DataSplits(train=kept, val=held, test=data.test.subset(torch.arange(test)),
                          name=data.name, source=data.source, mean=data.mean, std=data.std,
                          all_train=drawn)
    return make


def small_space():
    """A 28x28x1, 10-class space of a few blocks: the built-in data fits it, and a network
    trains in seconds."""
    from proxyless.model.space import SearchSpace, StageSpec

    return SearchSpace(name="small", input_size=28, in_channels=1, num_classes=10,
                       stages=(StageSpec(8, 2, 2), StageSpec(16, 2, 2)),
                       candidates=("k3e3", "k5e6", "zero"), feature_mix=32)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, builtin_subset) -> Path:
    """The folder of a finished `train` of a small network (model.pt, final.json): 6 epochs on
    2,000 built-in images, tested on 200 (~70% top-1: far from one class everywhere)."""
    from proxyless.model.architecture import Architecture
    from proxyless.training.trainer import TrainConfig, train_network

    out = tmp_path_factory.mktemp("trained") / "run"
    arch = Architecture(small_space(), ("k3e3", "k5e6", "k5e6", "zero"))
    train_network(arch, builtin_subset(2000), TrainConfig(epochs=6, batch_size=64, seed=0),
                  out, progress=False, log=lambda m: None)
    return out


class Payload:
    """Unpickling this runs `exec`, which would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


@contextlib.contextmanager
def interrupted_in_epoch(monkeypatch, epoch: int):
    """Inside the block, `proxyless.training.trainer`'s evaluation raises KeyboardInterrupt at its
    `epoch`-th call: a run killed after training that epoch, before writing its checkpoint."""
    import proxyless.training.trainer as train_module

    real_evaluate, calls = train_module.evaluate, []

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", interrupting)
    try:
        yield
    finally:
        monkeypatch.setattr(train_module, "evaluate", real_evaluate)


def read_events(folder) -> dict:
    """The TensorBoard events of a run folder as TensorBoard shows them (a resumed run's
    purge marks applied): {"scalars": {tag: [(step, value)]}, "images": {tag: [step]},
    "hparams": {name: value}, "metrics": [tag]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0,
                                                      "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    hparams, metrics = {}, []
    try:
        content = acc.PluginTagToContent("hparams")
    except KeyError:  # no hparams written
        content = {}
    for raw in content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("session_start_info"):
            for name, value in data.session_start_info.hparams.items():
                hparams[name] = value.WhichOneof("kind") and getattr(
                    value, value.WhichOneof("kind"))
        if data.HasField("experiment"):
            metrics = [m.name.tag for m in data.experiment.metric_infos]
    return {"scalars": {t: [(e.step, e.value) for e in acc.Scalars(t)]
                        for t in tags["scalars"]},
            "images": {t: [e.step for e in acc.Images(t)] for t in tags["images"]},
            "hparams": hparams, "metrics": metrics}


KILL_SPACE = """name: tiny-kill
input_size: 28
in_channels: 1
num_classes: 10
stem: {channels: 8, stride: 2, kernel: 3}
first_block: {channels: 8, kernel: 3}
stages:
  - {width: 16, depth: 2, stride: 2}
candidates: [k3e3, k5e3, zero]
feature_mix: 32
"""
# a space of a few dozen layers: profiled as one group, then calibrated; a kill falls before
# the table is first saved, between it and the calibration, or after
KILL_PROFILE_SPACE = """name: tiny-profile
input_size: 16
in_channels: 1
num_classes: 4
stem: {channels: 8, stride: 2, kernel: 3}
first_block: {channels: 8, kernel: 3}
stages:
  - {width: 8, depth: 2, stride: 2}
  - {width: 16, depth: 2, stride: 1}
candidates: [k3e3, k3e6, k5e3, k5e6, k7e3, k7e6, zero]
feature_mix: 16
"""


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> Path:
    """Tiny files for the command-line jobs that are killed, stopped or run under torchrun
    (test_kill_resume.py, test_distributed.py): space.yaml, profile_space.yaml, arch.json
    and data/ (IDX files: 300 train, 100 test)."""
    root = tmp_path_factory.mktemp("kill")
    (root / "space.yaml").write_text(KILL_SPACE)
    (root / "profile_space.yaml").write_text(KILL_PROFILE_SPACE)
    Architecture.uniform(load_space(root / "space.yaml"), "k3e3").save(root / "arch.json")
    source = Path(str(resources.files("proxyless") / "builtin_data"))
    (root / "data").mkdir()
    for split, count in (("train", 300), ("t10k", 100)):
        images = read_idx(source / f"{split}-images-idx3-ubyte.gz")[:count]
        labels = read_idx(source / f"{split}-labels-idx1-ubyte.gz")[:count]
        (root / "data" / f"{split}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x803, count, 28, 28) + images.astype(np.uint8).tobytes())
        (root / "data" / f"{split}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x801, count) + labels.astype(np.uint8).tobytes())
    return root


def records(run: Path) -> list[dict]:
    """metrics.jsonl without the timings."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if k != "epoch_time_s"} for m in lines]


def same(a, b) -> bool:
    """Equal, tensors bit for bit, through dicts and lists."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def same_saved(a: Path, b: Path, *keys: str) -> None:
    first, second = (torch.load(p, weights_only=True) for p in (a, b))
    for key in keys:
        assert same(first[key], second[key]), key
