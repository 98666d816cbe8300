"""Files we load may be hostile: nothing in them runs."""

import pickle

import pytest
import torch

from conftest import Payload
from proxyless.engine.runtime import load_checkpoint
from proxyless.errors import ProxylessError


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran.txt"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "proxyless-train/1", "epoch": 1, "model": Payload(marker)}, path)
    with pytest.raises(ProxylessError, match="other than tensors and plain data"):
        load_checkpoint(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps(Payload(marker)))  # a bare pickle, not a torch zip file
    with pytest.raises(ProxylessError, match="checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_checkpoint_of_plain_data_loads(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 2, "model": {"w": torch.ones(2)}, "metrics": [{"a": 1.0}]}, path)
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and torch.equal(state["model"]["w"], torch.ones(2))
    torch.save([1, 2], path)
    with pytest.raises(ProxylessError, match="not a proxyless checkpoint"):
        load_checkpoint(path)
