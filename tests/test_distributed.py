"""Scaling out with torchrun (PyTorch DDP, gloo on the CPU): two ranks train and search."""

import json
import os
import subprocess
import sys

import pytest


def failure(proc) -> str:
    """What a failed torchrun said: every rank's `proxyless:` lines (a rank's one-line error
    is far above torchrun's own traceback), then the end of its stderr."""
    said = [line for line in proc.stderr.splitlines() if "proxyless:" in line]
    return "\n".join(said) + "\n...\n" + proc.stderr[-2000:]


def torchrun(args, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "proxyless.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env=env)


@pytest.mark.slow
def test_train_and_search_under_torchrun(tmp_path):
    from proxyless import Architecture, load_space

    arch = Architecture.uniform(load_space("fashion"), "k3e3").save(tmp_path / "a.json")
    proc = torchrun(["train", str(arch), "--data", "builtin", "--epochs", "1",
                     "--batch-size", "32", "--out", str(tmp_path / "train"),
                     "--no-progress"], tmp_path)
    assert proc.returncode == 0, failure(proc)
    final = json.loads((tmp_path / "train" / "final.json").read_text())
    assert final["test_top1"] > 25.0

    proc = torchrun(["search", "--space", "fashion", "--data", "builtin", "--epochs", "2",
                     "--warmup-epochs", "0", "--batch-size", "100", "--train-limit", "1000",
                     "--target-mflops", "5", "--out", str(tmp_path / "search"),
                     "--no-progress"], tmp_path)
    assert proc.returncode == 0, failure(proc)
    assert (tmp_path / "search" / "arch.json").exists()
    lines = (tmp_path / "search" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # only rank 0 writes


@pytest.mark.slow
def test_run_under_torchrun(tmp_path):
    from proxyless.files import write_mapping_atomic
    from proxyless.model.space import SearchSpace, StageSpec, load_space

    space = SearchSpace(name="tiny-ddp", input_size=28, in_channels=1, num_classes=10,
                        stem=load_space("fashion").stem,
                        stages=(StageSpec(16, 2, 2), StageSpec(24, 1, 2)),
                        candidates=("k3e3", "k5e6", "zero"), feature_mix=32)
    write_mapping_atomic(tmp_path / "space.json", space.to_dict())
    os.environ["PROXYLESS_CACHE"] = str(tmp_path / "cache")
    try:
        proc = torchrun(["run", "--space", str(tmp_path / "space.json"), "--data", "builtin",
                         "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "100",
                         "--train-limit", "1000", "--retrain-epochs", "1",
                         "--profile-min-time", "0.01", "--out", str(tmp_path / "run"),
                         "--no-progress"], tmp_path)
    finally:
        del os.environ["PROXYLESS_CACHE"]
    assert proc.returncode == 0, failure(proc)
    assert proc.stdout.count("report:") == 1  # one rank reports
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["measured_ms"] > 0 and results["test_top1"] > 10.0
    assert len(list((tmp_path / "cache" / "tables").glob("tiny-ddp-*.json"))) == 1


@pytest.mark.slow
def test_sigterm_under_torchrun_stops_every_rank_and_resumes_exactly(tmp_path, files):
    """SIGTERM to torchrun (as a cluster preempting the job): it passes it to both ranks,
    which agree to stop after the same batch; rank 0 writes the checkpoint, both exit 75;
    resumed under torchrun, the weights end as an uninterrupted run's, bit for bit."""
    import signal
    import time

    import torch

    # long enough that the signal, sent 0.2 s after the first checkpoint, lands while it
    # trains: with 3 epochs it once came after the last one, before the model was saved
    epochs = 12
    args = ["train", str(files / "arch.json"), "--data", str(files / "data"), "--epochs",
            str(epochs), "--batch-size", "25", "--seed", "4", "--threads", "1", "--no-progress",
            "--checkpoint-every", "0.001"]
    ref = torchrun([*args, "--out", str(tmp_path / "ref")], tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]

    out, log = tmp_path / "run", tmp_path / "run.log"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "proxyless.cli", *args, "--out", str(out)]
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        give_up = time.monotonic() + 300
        while not (out / "checkpoint.pt").exists() and proc.poll() is None \
                and time.monotonic() < give_up:
            time.sleep(0.01)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # to torchrun, our own child
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert text.count("stopped by SIGTERM") == 2, text[-3000:]  # each rank, at one batch
    assert not (out / "final.json").exists()
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] < epochs

    resumed = torchrun([*args, "--out", str(out), "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (torch.load(d / "model.pt", weights_only=True)["weights"]
            for d in (out, tmp_path / "ref"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_folder_another_rank_made_and_removed_is_looked_up_again(tmp_path, monkeypatch):
    """Under torchrun, rank 0 probes that --out can be written by making it and removing it
    again; a rank that had just seen the folder exist must look again, not call it a file
    (a race that fits the one torchrun run seen failing, rank 1 exiting 2 unexplained)."""
    from proxyless.engine import runtime

    real, calls = runtime._nearest_existing, []

    def seen_then_gone(path):
        calls.append(path)
        return tmp_path / "run" if len(calls) == 1 else real(path)  # "run" no longer exists

    monkeypatch.setattr(runtime, "_nearest_existing", seen_then_gone)
    assert runtime.prepare_out_dir(tmp_path / "run", create=False) == tmp_path / "run"
    assert len(calls) == 2


def test_a_folder_seen_then_removed_is_not_called_a_file(tmp_path, monkeypatch):
    """The same race one step earlier: the folder existed when asked, and was gone when
    asked whether it is a folder (the run that failed said `--out ... is a file`)."""
    from pathlib import Path

    from proxyless.engine import runtime

    flicker, real_exists, asked = tmp_path / "run", Path.exists, []

    def exists(self, **kw):  # there the first time it is asked about, as a moment ago
        if self == flicker and not asked:
            asked.append(self)
            return True
        return real_exists(self, **kw)

    monkeypatch.setattr(Path, "exists", exists)
    assert runtime.prepare_out_dir(flicker, create=False) == flicker
    assert asked
