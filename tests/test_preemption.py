"""What clusters do to long runs, in-process: a SIGTERM or SIGUSR1 mid-epoch (checkpoint, stop,
resume at the next batch, bit-identical), mid-epoch checkpoints by time, out-of-memory errors,
full disks, and one writer per run folder. (Killed processes: tests/test_kill_resume.py.)"""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from conftest import read_events, records, same_saved
from proxyless import Architecture, load_space
from proxyless.engine import stopping
from proxyless.engine.epochs import EpochCursor
from proxyless.engine.memory import fit_batch, largest_batch, round_batch
from proxyless.engine.run_lock import LOCK_FILE, hold_run_folder
from proxyless.errors import ProxylessError
from proxyless.latency.cost import flops_model
from proxyless.model.space import SearchSpace, StageSpec
from proxyless.search import SearchConfig, search
from proxyless.training.trainer import TrainConfig, train_network


def signal_at(monkeypatch, epoch: int, batch: int, sig: int = signal.SIGTERM) -> None:
    """This process receives `sig` as step `batch` (from 0) of `epoch` ends."""
    real = EpochCursor.step_done

    def step_done(self, index, total, loop_state):
        if self.epoch == epoch and index == batch:
            os.kill(os.getpid(), sig)
        return real(self, index, total, loop_state)

    monkeypatch.setattr(EpochCursor, "step_done", step_done)


def interrupt_at(monkeypatch, epoch: int, batch: int) -> None:
    """A crash (KeyboardInterrupt) right after step `batch` of `epoch` and its checkpoint."""
    real = EpochCursor.step_done

    def step_done(self, index, total, loop_state):
        real(self, index, total, loop_state)
        if self.epoch == epoch and index == batch:
            raise KeyboardInterrupt

    monkeypatch.setattr(EpochCursor, "step_done", step_done)


@pytest.fixture(scope="module")
def train_setup(builtin_subset):
    arch = Architecture.uniform(load_space("fashion"), "k3e3")
    # 4 steps per epoch; dropout and augmentation draw from the RNGs a checkpoint must keep
    return arch, builtin_subset(256, 0, 100), TrainConfig(epochs=2, batch_size=64, seed=5,
                                                          log_every=3)


@pytest.fixture(scope="module")
def uninterrupted(train_setup, tmp_path_factory) -> Path:
    arch, data, config = train_setup
    out = tmp_path_factory.mktemp("full")
    train_network(arch, data, config, out, progress=False)
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_checkpoints_mid_epoch_and_resume_is_bit_identical(
        tmp_path, monkeypatch, train_setup, uninterrupted, sig):
    arch, data, config = train_setup
    signal_at(monkeypatch, epoch=1, batch=1, sig=sig)
    with pytest.raises(stopping.Stopped, match=rf"{signal.Signals(sig).name} after batch 2/4 "
                                               r"of epoch 2/2.*--resume") as stop:
        train_network(arch, data, config, tmp_path, progress=False)
    assert stop.value.exit_code == stopping.EXIT_STOPPED == 75
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["in_epoch"]["batch"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert not (tmp_path / LOCK_FILE).exists()  # the folder's lock went with the run
    monkeypatch.undo()

    train_network(arch, data, config, tmp_path, resume=True, progress=False)
    same_saved(tmp_path / "model.pt", uninterrupted / "model.pt", "weights")
    assert records(tmp_path) == records(uninterrupted)
    # TensorBoard: each step once, with the uninterrupted values (the interval straddling
    # the stop summed across it)
    before, after = read_events(uninterrupted)["scalars"], read_events(tmp_path)["scalars"]
    for tag in before.keys() - {"epoch/epoch_time_s"}:
        assert after[tag] == before[tag], tag


def test_checkpoints_by_time_inside_epochs_resume_exactly(tmp_path, monkeypatch, train_setup,
                                                          uninterrupted):
    arch, data, config = train_setup
    config = TrainConfig(**{**vars(config), "checkpoint_every": 1e-9})  # after every step
    interrupt_at(monkeypatch, epoch=0, batch=2)
    with pytest.raises(KeyboardInterrupt):
        train_network(arch, data, config, tmp_path, progress=False)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 0 and checkpoint["in_epoch"]["batch"] == 3
    monkeypatch.undo()
    logged = []
    train_network(arch, data, config, tmp_path, resume=True, progress=False,
                  log=logged.append)
    assert any("in epoch 1/2 at batch 4" in line for line in logged)
    # checkpoint_every is a resumable change
    same_saved(tmp_path / "model.pt", uninterrupted / "model.pt", "weights")


def test_a_mid_epoch_checkpoint_refuses_another_world_size(tmp_path, monkeypatch, train_setup):
    arch, data, config = train_setup
    signal_at(monkeypatch, epoch=0, batch=0)
    with pytest.raises(stopping.Stopped):
        train_network(arch, data, config, tmp_path, progress=False)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    checkpoint["in_epoch"]["world_size"] = 2
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    monkeypatch.undo()
    with pytest.raises(ProxylessError, match="2 process.*nproc-per-node 2"):
        train_network(arch, data, config, tmp_path, resume=True, progress=False)


def tiny_space() -> SearchSpace:
    return SearchSpace(name="tiny-stop", input_size=28, in_channels=1, num_classes=10,
                       stages=(StageSpec(16, 2, 2), StageSpec(24, 1, 2)),
                       candidates=("k3e3", "k5e6", "zero"), feature_mix=32)


def test_search_stopped_inside_an_architecture_epoch_ends_with_the_same_result(
        tmp_path, monkeypatch, builtin_subset):
    space, data = tiny_space(), builtin_subset(600, 200)
    cost = flops_model(space)
    # 12 steps per epoch, an α step every 3: the stop falls between α steps (the validation
    # stream's position, the gates' generator and the α statistics carry over)
    cfg = SearchConfig(warmup_epochs=1, epochs=2, batch_size=50, arch_every=3, seed=2,
                       metric="flops", target=cost.bounds()[0] * 1.5, eval_limit=100)
    full = search(space, data, cost, cfg, tmp_path / "a", progress=False)
    signal_at(monkeypatch, epoch=2, batch=4)
    with pytest.raises(stopping.Stopped, match="batch 5/12 of epoch 3/3"):
        search(space, data, cost, cfg, tmp_path / "b", progress=False)
    monkeypatch.undo()
    resumed = search(space, data, cost, cfg, tmp_path / "b", resume=True, progress=False)
    assert resumed.arch == full.arch
    for a, b in zip(full.supernet.state_dict().values(),
                    resumed.supernet.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert records(tmp_path / "b") == records(tmp_path / "a")


def test_out_of_memory_in_a_step_is_one_line_keeping_the_checkpoint(
        tmp_path, monkeypatch, train_setup):
    arch, data, config = train_setup
    real, calls = EpochCursor.step_done, []

    def step_done(self, index, total, loop_state):
        calls.append(index)
        if self.epoch == 1 and index == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(self, index, total, loop_state)

    monkeypatch.setattr(EpochCursor, "step_done", step_done)
    with pytest.raises(ProxylessError) as err:
        train_network(arch, data, config, tmp_path, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert "out of GPU memory in epoch 2/2, step 3 at batch size 64" in message
    assert "memory estimate" in message and "checkpoint.pt keeps the last checkpoint" in message
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1

    monkeypatch.setattr(EpochCursor, "step_done", lambda *a: (_ for _ in ()).throw(
        MemoryError()))
    with pytest.raises(ProxylessError, match="out of CPU memory in epoch 1/2, step 1 at "
                                             "batch size 64.*no checkpoint was written"):
        train_network(arch, data, config, tmp_path / "fresh", progress=False)


def test_the_batch_size_search_and_estimate(builtin_subset):
    # fit_batch: the largest batch that fits, whatever the start (doubling, halving, bisecting)
    for capacity in (0, 1, 7, 100, 1024, 5000):
        for start in (1, 64, 2000):
            assert fit_batch(lambda b, c=capacity: b <= c, start, 1024) == min(capacity, 1024)
    space = load_space("imagenet")
    cpu = torch.device("cpu")
    # the estimate grows with memory, halves with 16-bit activations, and a network takes
    # more than the supernet's two paths
    small, large = (largest_batch(space, cpu, capacity=g * 2**30) for g in (8, 32))
    assert 0 < small < large
    assert largest_batch(space, cpu, "bf16", capacity=32 * 2**30) > large
    assert largest_batch(space, cpu, supernet=False, capacity=32 * 2**30) > large
    assert largest_batch(space, cpu, capacity=2**20) == 0
    assert [round_batch(b) for b in (5, 15, 17, 130)] == [5, 15, 16, 128]
    # --batch-size auto in the library: a search on 200 images with 5 weight steps per α
    # step is limited by the data, and says so
    from proxyless.engine.memory import auto_batch_size

    batch, how = auto_batch_size(load_space("fashion"), builtin_subset(200, 50), "cpu", "fp32",
                                 arch_every=5)
    assert 1 <= batch <= 40 and how.startswith("as large as the data allows: 200 training")


def test_one_writer_per_run_folder(tmp_path):
    folder = tmp_path / "run"
    with hold_run_folder(folder):
        assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())
        with hold_run_folder(folder):  # re-entrant in one process (CLI, then library)
            pass
        assert (folder / LOCK_FILE).exists()
        # another open file description is another writer: refused at once, with the pid
        import fcntl
        fd = os.open(folder / LOCK_FILE, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    assert not (folder / LOCK_FILE).exists()
    with hold_run_folder(folder):  # free again once released
        pass


def test_a_full_disk_keeps_the_previous_file_and_says_what_was_needed(tmp_path, monkeypatch):
    from proxyless import files
    from proxyless.engine.runtime import save_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.zeros(10)})
    real = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(ProxylessError) as err:
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(1000)})
    monkeypatch.setattr(files.os, "fsync", real)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "no space left" in message
    assert "needed" in message and "previous checkpoint.pt is intact" in message
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left


def test_batch_size_auto_picks_what_fits_and_resumes_with_it(tmp_path, files, capsys):
    from proxyless.cli import main

    out = tmp_path / "run"
    args = ["train", str(files / "arch.json"), "--data", str(files / "data"), "--epochs", "1",
            "--batch-size", "auto", "--no-progress", "--no-tensorboard", "--out", str(out)]
    assert main(args) == 0
    chosen = json.loads((out / "config.json").read_text())["train"]["batch_size"]
    # a tiny network fits far more than the 300 images: the data bounds it (a multiple of 8)
    assert chosen == 296
    assert ("--batch-size auto: 296 per process (as large as the data allows: 300 training "
            "images") in capsys.readouterr().err
    assert "batch_size: auto" in (out / "config.yaml").read_text()  # the command as given

    from argparse import Namespace

    from proxyless.cli.options import resolve_batch_size

    again = Namespace(batch_size="auto", resume=True, out=str(out))
    assert resolve_batch_size(again, None, None, "train") == 296  # the run's own, no probe


def test_outside_the_epochs_a_stop_signal_stops_at_once_and_no_handler_swallows_it():
    assert not issubclass(stopping.Stopped, Exception)  # `except Exception` lets it pass
    with stopping.stop_signals():
        with pytest.raises(stopping.Stopped, match="stopped by SIGUSR1"):
            try:
                os.kill(os.getpid(), signal.SIGUSR1)
                for _ in range(1000):  # the handler runs between bytecodes
                    pass
            except Exception:  # an image decoder's catch-all, say
                pytest.fail("the stop was taken for an error")
        with stopping.deferred():  # inside the epochs: only noted
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
            assert stopping.requested() == "SIGTERM"
    stopping.clear()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
