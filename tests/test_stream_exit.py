"""Commands on a streamed image folder end, and end their decoding processes: finished, they
exit at once with no process left; stopped (SIGTERM, SIGUSR1, Ctrl-C) they exit 75 (130)
within seconds, with one or two workers and under a 2-process torchrun.

Before the workers were ended explicitly, a command whose loader was left mid-pass (a stop
signal mid-epoch; the search's validation stream, never read to its end) hung at exit for
ever: multiprocessing's exit handler ends daemonic workers with SIGTERM, which the workers
ignore by design (a cluster signals every process of a job), and then waits for them. This
folder (400 small photos) hung every time then.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

STOPPED_CODE, INTERRUPTED_CODE = 75, 130
PROMPT = 20  # seconds a command may take to end once stopped or finished (it takes ~1)

@pytest.fixture(scope="module")
def folder(tmp_path_factory, files) -> Path:
    """An ImageNet-layout folder (train/ and val/, 4 classes, 100 + 10 JPEGs each), with
    the tiny 28-px space of `files` and a network of it (read as grayscale, the classifier
    sized to the folder's 4 classes)."""
    root = tmp_path_factory.mktemp("stream-exit")
    rng = np.random.default_rng(0)
    for split, count in (("train", 100), ("val", 10)):
        for c in range(4):
            (root / "photos" / split / f"class{c}").mkdir(parents=True)
            for i in range(count):
                pixels = (rng.random((48, 48, 3)) * 60 + c * 50).astype(np.uint8)
                Image.fromarray(pixels).save(root / "photos" / split / f"class{c}" / f"{i}.jpg")
    shutil.copyfile(files / "space.yaml", root / "space.yaml")
    shutil.copyfile(files / "arch.json", root / "arch.json")
    return root


def streamed(folder: Path, workers: int) -> list[str]:
    return ["--data", str(folder / "photos"), "--data-mode", "stream", "--workers",
            str(workers), "--threads", "1", "--no-progress", "--no-tensorboard"]


def start(args: list[str], cwd: Path, torchrun: bool = False) -> subprocess.Popen:
    """`proxyless ARGS` in a process group of its own (so that what it leaves behind can be
    found, and signalled as a terminal or a cluster signals a job)."""
    head = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
             "2"] if torchrun else [sys.executable])
    env = {**os.environ, "PROXYLESS_CACHE": str(cwd / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*head, "-m", "proxyless.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def group_left(proc: subprocess.Popen) -> bool:
    """Whether any process of the command's group is still alive (the group is killed)."""
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    return True


def ended(proc: subprocess.Popen, output: list[str]) -> int:
    """The exit code, once it came within PROMPT seconds; no process of its group left."""
    try:
        out, _ = proc.communicate(timeout=PROMPT)
    except subprocess.TimeoutExpired:
        group_left(proc)
        out, _ = proc.communicate()
        pytest.fail(f"still running {PROMPT} s later:\n{''.join(output)}{out.decode()[-3000:]}")
    output.append(out.decode(errors="replace"))
    time.sleep(0.5)  # a worker the command forgot would outlive it by its watchdog's 5 s
    assert not group_left(proc), "decoding processes outlived the command:\n" + output[-1]
    return proc.returncode


def wait_for(proc: subprocess.Popen, text: str, output: list[str]) -> None:
    """Read the command's output until `text` appears."""
    give_up = time.monotonic() + 300
    line = b""
    while text not in line.decode(errors="replace"):
        line = proc.stdout.readline()
        output.append(line.decode(errors="replace"))
        if not line and proc.poll() is not None or time.monotonic() > give_up:
            group_left(proc)
            pytest.fail(f"{text!r} never came:\n{''.join(output)[-3000:]}")


@pytest.mark.parametrize("command", ["train", "search", "run", "evaluate"])
def test_a_finished_streamed_command_exits_at_once_with_no_process_left(folder, tmp_path,
                                                                        command):
    space, arch, out = str(folder / "space.yaml"), str(folder / "arch.json"), str(tmp_path / "o")
    search = ["--space", space, "--warmup-epochs", "1", "--epochs", "2", "--batch-size", "16",
              "--arch-every", "2", "--val-size", "48", "--out", out]
    args = {"train": ["train", arch, "--epochs", "1", "--batch-size", "16", "--out", out],
            "search": ["search", *search, "--target-mflops", "0.25"],
            "run": ["run", *search, "--retrain-epochs", "1", "--profile-min-time", "0.05"],
            "evaluate": ["evaluate", str(folder / "model")]}[command]
    if command == "evaluate":
        trained = start(["train", arch, "--epochs", "1", "--batch-size", "16", "--out",
                         str(folder / "model"), *streamed(folder, 2)], tmp_path)
        assert ended(trained, []) == 0
        args += ["--data", str(folder / "photos")]  # its workers: the cores, less one
    else:
        args += streamed(folder, 2)
    output: list[str] = []
    assert ended(start(args, tmp_path), output) == 0, output[-1][-3000:]


@pytest.mark.parametrize("sig, workers, whole_group", [
    (signal.SIGTERM, 1, False), (signal.SIGTERM, 2, True), (signal.SIGUSR1, 2, False),
    (signal.SIGINT, 1, True),  # Ctrl-C: the terminal signals the whole group
])
def test_a_stopped_streamed_training_exits_within_seconds(folder, tmp_path, sig, workers,
                                                          whole_group):
    proc = start(["train", str(folder / "arch.json"), "--epochs", "50", "--batch-size", "8",
                  "--out", str(tmp_path / "t"), *streamed(folder, workers)], tmp_path)
    output: list[str] = []
    wait_for(proc, "epoch 1/50", output)  # mid-epoch 2 below: the loader is mid-pass
    time.sleep(0.3)
    (os.killpg if whole_group else os.kill)(proc.pid, sig)
    code = ended(proc, output)
    text = "".join(output)
    assert code == (INTERRUPTED_CODE if sig == signal.SIGINT else STOPPED_CODE), text[-3000:]
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.slow
def test_a_stopped_streamed_training_under_torchrun_exits_within_seconds(folder, tmp_path):
    proc = start(["train", str(folder / "arch.json"), "--epochs", "50", "--batch-size", "8",
                  "--out", str(tmp_path / "t"), *streamed(folder, 1)], tmp_path, torchrun=True)
    output: list[str] = []
    wait_for(proc, "epoch 1/50", output)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)  # to torchrun, which passes it to both ranks
    code = ended(proc, output)
    text = "".join(output)
    assert text.count("stopped by SIGTERM") == 2, text[-3000:]
    assert code != 0 and "Traceback" not in text.split("stopped by SIGTERM")[0], text[-3000:]
