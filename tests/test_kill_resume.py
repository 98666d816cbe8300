"""Crash safety: `search`, `train`, `profile` and `run` killed with SIGKILL, or stopped with
SIGTERM (a cluster's preemption), at seeded random moments (inside epochs too: they write
checkpoints inside epochs), then resumed, end where an uninterrupted run ends; a second
process writing the same run folder is refused; a loss that becomes NaN stops a
run at its last good checkpoint; runs sharing the latency cache profile a table once.

Every job is a real `python -m proxyless.cli` process on tiny files (a 2-block space, 300
training images), one thread each, so results are bit-for-bit reproducible on the CPU. The
uninterrupted reference runs beside the chain of killed ones (2 cores: wall time ~halved).
A kill lands a random delay after an event of the job (its folder or a new checkpoint
appears), so it hits mid-epoch, mid-write or between files depending on the draw.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conftest import records, same_saved
from proxyless import load_architecture, load_space
from proxyless.cli import main as cli_main
from proxyless.errors import ProxylessError
from proxyless.latency.profile import layer_workloads
from proxyless.latency.table import LatencyTable
from proxyless.training.trainer import TrainConfig, train_network

COMMON = ("--threads", "1", "--no-progress")
# a checkpoint inside the epochs every ~60 ms: a kill lands after one, mid-epoch, or during one
MID_EPOCH = ("--checkpoint-every", "0.001")
STOPPED_CODE = 75  # proxyless.engine.stopping.EXIT_STOPPED
DATA = ("--val-size", "100")  # of 300 training images: 4 batches of 50 per epoch


STARTED: list[subprocess.Popen] = []
TIMEOUT = 300  # seconds for one job, on a busy machine


@pytest.fixture(autouse=True)
def no_job_outlives_its_test():
    yield
    for proc in STARTED:  # a failed test's reference run, say: ours, killed by its id
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    STARTED.clear()


def start(args: list[str], log: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "PROXYLESS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    with open(log, "a") as out:
        STARTED.append(subprocess.Popen([sys.executable, "-m", "proxyless.cli", *args],
                                        stdout=out, stderr=subprocess.STDOUT, env=env))
    return STARTED[-1]


def finish(proc: subprocess.Popen, log: Path) -> None:
    assert proc.wait(TIMEOUT) == 0, log.read_text()[-3000:]


def state(path: Path) -> tuple[int, int] | None:
    """What tells a rewritten file apart (atomic writes give it a new inode)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def changes(path: Path) -> Callable[[], bool]:
    """An event: `path` is (re)written after now."""
    before = state(path)
    return lambda: state(path) not in (None, before)


def kill_after(args: list[str], log: Path, cache: Path, event: Callable[[], bool],
               delay: float, sig: int = signal.SIGKILL) -> bool:
    """Run the command until `event()`, `delay` seconds more, then send it `sig` (SIGKILL, or
    SIGTERM: it then stops itself, with a checkpoint and exit code 75). Whether the signal
    came first (else the job had finished)."""
    proc, give_up = start(args, log, cache), time.monotonic() + TIMEOUT
    while proc.poll() is None and not event() and time.monotonic() < give_up:
        time.sleep(0.005)
    deadline = time.monotonic() + delay
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is None:
        os.kill(proc.pid, sig)  # our own child, by its id
    code = proc.wait(TIMEOUT)
    stopped = STOPPED_CODE if sig == signal.SIGTERM else -signal.SIGKILL
    assert code in (0, stopped), log.read_text()[-3000:]
    tail = log.read_text().strip().splitlines()[-1:] or ["(no output yet)"]
    if code == STOPPED_CODE:  # it said how to go on
        assert "stopped by SIGTERM" in tail[0], tail[0]
        assert "plus --resume" in tail[0] or "without --resume" in tail[0], tail[0]
    print(f"{args[0]}: {signal.Signals(sig).name if code else 'finished'} {delay:.2f}s after "
          f"the event, last line: {tail[0][:100]}")  # shown where a test fails
    return code == stopped


def kill_chain(args: list[str], out: Path, cache: Path, events: list[Callable[[], Callable]],
               delays: list[float], resume: Callable[[], bool],
               signals: list[int] | None = None) -> int:
    """Kill the job at each (event, delay) with each of `signals` (default SIGKILL), resuming
    it each time (`--resume` where `resume()`), then let it finish. How many kills landed
    before the job ended."""
    log, kills = out.parent / f"{out.name}-chain.log", 0
    signals = signals or [signal.SIGKILL] * len(events)
    for event, delay, sig in zip(events, delays, signals, strict=True):
        kills += kill_after([*args, *(["--resume"] if resume() else [])], log, cache,
                            event(), delay, sig)
    finish(start([*args, *(["--resume"] if resume() else [])], log, cache), log)
    return kills


def test_train_killed_and_resumed_ends_like_an_uninterrupted_run(tmp_path, files):
    args = ["train", str(files / "arch.json"), "--data", str(files / "data"), "--epochs", "8",
            "--batch-size", "50", "--seed", "3", *COMMON]
    ref = start([*args, "--out", str(tmp_path / "ref")], tmp_path / "ref.log", tmp_path)
    out, rng = tmp_path / "run", random.Random(1)
    checkpoint = out / "checkpoint.pt"
    # SIGTERM (a preemption: stop after the batch, checkpoint, exit 75), then kill -9 after
    # a checkpoint that may be one inside an epoch: the run ends with the same weights
    kills = kill_chain([*args, *MID_EPOCH, "--out", str(out)], out, tmp_path,
                       [lambda: changes(out / "config.json"), lambda: changes(checkpoint)],
                       [rng.uniform(0, 0.8), rng.uniform(0, 0.3)],
                       checkpoint.exists, [signal.SIGTERM, signal.SIGKILL])
    finish(ref, tmp_path / "ref.log")
    assert kills >= 1
    final, want = (json.loads((d / "final.json").read_text()) for d in (out, tmp_path / "ref"))
    assert (final["test_top1"], final["test_loss"]) == (want["test_top1"], want["test_loss"])
    assert records(out) == records(tmp_path / "ref")
    same_saved(out / "model.pt", tmp_path / "ref" / "model.pt", "weights")


def test_search_killed_and_resumed_ends_with_the_same_architecture(tmp_path, files):
    args = ["search", "--space", str(files / "space.yaml"), "--data", str(files / "data"),
            *DATA, "--target-mflops", "0.12", "--warmup-epochs", "1", "--epochs", "3",
            "--arch-every", "1", "--batch-size", "50", "--seed", "5", *COMMON]
    ref = start([*args, "--out", str(tmp_path / "ref")], tmp_path / "ref.log", tmp_path)
    out, rng = tmp_path / "run", random.Random(5)
    checkpoint = out / "checkpoint.pt"
    kills = kill_chain([*args, *MID_EPOCH, "--out", str(out)], out, tmp_path,
                       [lambda: changes(out / "config.json"), lambda: changes(checkpoint)],
                       [rng.uniform(0, 0.4), rng.uniform(0, 0.2)],
                       checkpoint.exists, [signal.SIGKILL, signal.SIGTERM])
    finish(ref, tmp_path / "ref.log")
    assert kills >= 1
    assert (out / "arch.json").read_text() == (tmp_path / "ref" / "arch.json").read_text()
    summary, want = (json.loads((d / "summary.json").read_text())
                     for d in (out, tmp_path / "ref"))
    for key in ("arch", "val_top1", "entropy", "params", "macs"):
        assert summary[key] == want[key], key
    assert records(out) == records(tmp_path / "ref")
    same_saved(checkpoint, tmp_path / "ref" / "checkpoint.pt", "supernet", "w_optimizer",
               "w_scheduler", "strategy", "probs_history")


def test_profile_killed_and_rerun_keeps_what_it_measured(tmp_path, files):
    space = files / "profile_space.yaml"
    args = ["profile", "--space", str(space), "--repeats", "2", "--warmup", "0",
            "--min-time", "0.05", "--calibrate", "3", "--threads", "1", "--no-progress",
            "--out", str(tmp_path / "table.json")]
    out, rng, log = tmp_path / "table.json", random.Random(3), tmp_path / "chain.log"
    kept: dict[str, float] = {}  # what the killed profiles had saved
    kills = 0
    for delay in (rng.uniform(0, 0.15), rng.uniform(0, 0.3)):
        kills += kill_after(args, log, tmp_path, changes(out), delay)
        if out.exists():  # never half-written, whenever the kill came
            kept = {k: e.ms for k, e in LatencyTable.load(out).entries.items()}
    finish(start(args, log, tmp_path), log)
    assert kills >= 1 and kept
    table = LatencyTable.load(out)
    assert table.entries.keys() == layer_workloads(load_space(space), 1).keys()
    assert table.calibration
    assert {k: table.entries[k].ms for k in kept} == kept  # reused, not measured again
    if len(kept) < len(table.entries):
        assert f"{len(kept)} entries already measured" in log.read_text()


@pytest.mark.slow
def test_run_killed_and_resumed_ends_with_the_same_results(tmp_path, files):
    """Profiling (shared cache, the reference running beside it), search and retraining."""
    args = ["run", "--space", str(files / "space.yaml"), "--data", str(files / "data"), *DATA,
            "--warmup-epochs", "1", "--epochs", "2", "--arch-every", "1", "--batch-size", "50",
            "--retrain-epochs", "3", "--profile-min-time", "0.02", "--seed", "7", *COMMON]
    cache = tmp_path / "cache"
    ref = start([*args, "--out", str(tmp_path / "ref")], tmp_path / "ref.log", cache)
    out, rng = tmp_path / "run", random.Random(4)
    kills = kill_chain(
        [*args, *MID_EPOCH, "--out", str(out)], out, cache,
        [lambda: lambda: out.exists(), lambda: changes(out / "search" / "checkpoint.pt"),
         lambda: changes(out / "retrain" / "checkpoint.pt")],
        [rng.uniform(0, 2.0), rng.uniform(0, 0.5), rng.uniform(0, 0.3)], out.exists,
        [signal.SIGKILL, signal.SIGTERM, signal.SIGTERM])
    finish(ref, tmp_path / "ref.log")
    assert kills >= 1
    results, want = (json.loads((d / "results.json").read_text())
                     for d in (out, tmp_path / "ref"))
    for key in ("arch", "test_top1", "target_ms", "predicted_ms", "params", "macs",
                "search_val_top1"):
        assert results[key] == want[key], key
    same_saved(out / "retrain" / "model.pt", tmp_path / "ref" / "retrain" / "model.pt",
               "weights")
    assert len(list((cache / "tables").glob("*.json"))) == 1  # one table, profiled once


FAKE_PROFILER = """
import sys, time
from pathlib import Path
import proxyless.latency.cache as cache
import proxyless.latency.profile as profile
from proxyless.latency.calibration import Calibration
from proxyless.latency.table import Entry, LatencyTable
from proxyless.latency.profile import ProfileSetting
from proxyless.model.space import load_space

marks = Path(sys.argv[2])

def slow_profile(space, path, timer, batch, progress, log):
    (marks / f"profiled-{sys.argv[1]}").touch()
    time.sleep(3.0)  # long enough for the other process to arrive while this one holds it
    return LatencyTable({"layer": Entry(1.0)}, cache.profile_meta(space, timer))

def fake_calibrate(table, count, progress):
    fit = Calibration(fit={"mape_plain_sum": 1.0, "mape_fitted": 0.5, "architectures": 2})
    table.calibration = fit.to_dict()
    return fit

profile.profile_space, profile.calibrate = slow_profile, fake_calibrate
(marks / f"ready-{sys.argv[1]}").touch()
while len(list(marks.glob("ready-*"))) < 2:  # start together, imports done
    time.sleep(0.01)
table, path = cache.cached_table(load_space(sys.argv[3]),
                                 ProfileSetting(min_time=0.01, calibration_networks=2), False)
print("table", path, len(table.entries))
"""


def test_two_runs_sharing_the_cache_profile_a_table_once(tmp_path, files):
    marks, env = tmp_path / "marks", {**os.environ, "PROXYLESS_CACHE": str(tmp_path / "c")}
    marks.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", FAKE_PROFILER, str(i), str(marks),
                               str(files / "space.yaml")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    STARTED.extend(procs)
    outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert len(list(marks.glob("profiled-*"))) == 1, outputs  # one profiling, not two
    waited = [o for o in outputs if "waiting for another process profiling" in o]
    assert len(waited) == 1 and "reusing" in waited[0], outputs
    tables = list((tmp_path / "c" / "tables").glob("*.json"))
    assert len(tables) == 1 and LatencyTable.load(tables[0]).calibration


def test_a_nan_training_loss_stops_at_the_last_good_checkpoint(tmp_path, files, builtin_subset,
                                                               monkeypatch):
    arch = load_architecture(files / "arch.json")  # the 2-block space, 28x28x1 like the data
    data, config = builtin_subset(100, 0, 50), TrainConfig(epochs=3, batch_size=50, seed=3)
    real, calls = torch.nn.CrossEntropyLoss.forward, []

    def nan_in_epoch_two(self, logits, y):
        calls.append(1)
        return real(self, logits, y) * (math.nan if len(calls) == 2 + 2 else 1.0)

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", nan_in_epoch_two)
    with pytest.raises(ProxylessError) as err:
        train_network(arch, data, config, tmp_path / "b", progress=False)
    assert "the training loss became nan in epoch 2/3, batch 2/2; lower --lr" in str(err.value)
    assert "last good epoch (1/3" in str(err.value)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert len(records(tmp_path / "b")) == 1 and not (tmp_path / "b" / "final.json").exists()
    monkeypatch.undo()
    resumed = train_network(arch, data, config, tmp_path / "b", resume=True, progress=False)
    full = train_network(arch, data, config, tmp_path / "a", progress=False)
    assert resumed.test_top1 == full.test_top1
    assert records(tmp_path / "b") == records(tmp_path / "a")


def test_a_second_writer_of_a_run_folder_is_refused_at_once(tmp_path, files):
    """Two `search --out SAME`: the second (and a --resume of the running one) is refused
    while the first runs, touching nothing; kill -9 leaves no lock behind to clean up."""
    args = ["search", "--space", str(files / "space.yaml"), "--data", str(files / "data"),
            *DATA, "--target-mflops", "0.12", "--warmup-epochs", "1", "--epochs", "30",
            "--arch-every", "1", "--batch-size", "50", *COMMON, "--out", str(tmp_path / "run")]
    first = start([*args, "--seed", "1"], tmp_path / "first.log", tmp_path)
    give_up = time.monotonic() + TIMEOUT
    while not (tmp_path / "run" / "checkpoint.pt").exists() and time.monotonic() < give_up:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.01)
    settings = (tmp_path / "run" / "config.yaml").read_text()
    for extra in (["--seed", "2"], ["--seed", "1", "--resume"]):
        began = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "proxyless.cli", *args, *extra],
                                capture_output=True, text=True, timeout=TIMEOUT,
                                env={**os.environ, "PROXYLESS_CACHE": str(tmp_path)})
        assert second.returncode == 2, second.stderr
        assert f"is in use by another proxyless process (pid {first.pid})" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert time.monotonic() - began < 60  # at once: before any data or work
    assert (tmp_path / "run" / "config.yaml").read_text() == settings  # untouched
    assert first.poll() is None
    os.kill(first.pid, signal.SIGKILL)
    first.wait(TIMEOUT)
    assert (tmp_path / "run" / ".lock").exists()  # the file stays; its lock died with it
    resumed = start([*args, "--seed", "1", "--resume"], tmp_path / "r.log", tmp_path)
    give_up = time.monotonic() + TIMEOUT
    while "resuming" not in (tmp_path / "r.log").read_text() and resumed.poll() is None \
            and time.monotonic() < give_up:
        time.sleep(0.01)
    assert "resuming" in (tmp_path / "r.log").read_text(), (tmp_path / "r.log").read_text()
    os.kill(resumed.pid, signal.SIGKILL)


def test_a_file_size_limit_keeps_the_last_checkpoint(tmp_path, files):
    """RLIMIT_FSIZE (ulimit -f) below the second checkpoint's size: the first one stays
    whole, the error is one line naming the file, the size needed and --resume."""
    import resource

    args = ["train", str(files / "arch.json"), "--data", str(files / "data"),
            "--batch-size", "50", "--seed", "3", "--no-tensorboard", "--no-progress"]
    # with the very options of the run below but its epochs (a setting one byte longer could
    # move the checkpoint's zip records past a 64-byte boundary)
    subprocess.run([sys.executable, "-m", "proxyless.cli", *args, "--epochs", "1", "--threads",
                    "1", "--out", str(tmp_path / "one")], check=True, capture_output=True,
                   timeout=TIMEOUT, env={**os.environ, "PROXYLESS_CACHE": str(tmp_path)})
    first_size = (tmp_path / "one" / "checkpoint.pt").stat().st_size  # one epoch's record
    # the run below writes a checkpoint of this very size after its first epoch (binary
    # floats: sizes do not depend on the values), then one 64 or 128 bytes larger (the zip
    # records are 64-byte aligned; one more epoch's record is ~80 bytes)
    limit = first_size + 1

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "two"
    proc = subprocess.run([sys.executable, "-m", "proxyless.cli", *args, "--epochs", "2",
                           "--threads", "1", "--out", str(out)], capture_output=True,
                          text=True, timeout=TIMEOUT,
                          preexec_fn=small_files,
                          env={**os.environ, "PROXYLESS_CACHE": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"proxyless: error: no space left to write {out / 'checkpoint.pt'}")
    assert "needed, the file-size limit (ulimit -f)" in error and "EFBIG" in error
    assert "previous checkpoint.pt is intact" in error and "--resume" in error
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not list(out.glob(".checkpoint.pt.*"))  # no temporary file left
    assert cli_main([*args, "--epochs", "2", "--out", str(out), "--resume"]) == 0
    assert (out / "final.json").exists()
