"""A full disk or a file-size limit while a checkpoint is written is one line, however the
writer wraps the OSError (torch.save's zip writer raises a RuntimeError "unexpected pos"
while handling it), and what was written before stays whole. On a real small file system (a
tmpfs mounted in a user namespace of the test's own, where the machine allows it) and with
RLIMIT_FSIZE (ulimit -f) at several sizes."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from proxyless.errors import ProxylessError
from proxyless.files import no_room_cause, replace_atomically

TIMEOUT = 300
CHECKPOINT_BYTES = 67_000  # about what one checkpoint of the tiny train job takes


def train_args(files: Path, out: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "proxyless.cli", "train", str(files / "arch.json"),
            "--data", str(files / "data"), "--batch-size", "50", "--epochs", str(epochs),
            "--threads", "1", "--no-progress", "--out", str(out)]


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("proxyless:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize("limit", [16 * 1024, 64 * 1024, CHECKPOINT_BYTES - 1024])
def test_a_file_size_limit_below_the_checkpoint_is_one_line(files, tmp_path, limit):
    out = tmp_path / "run"

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(train_args(files, out, 1), capture_output=True, text=True,
                          timeout=TIMEOUT, preexec_fn=small_files,
                          env={**os.environ, "PROXYLESS_CACHE": str(tmp_path)})
    error = one_error_line(proc)
    assert error.startswith(f"proxyless: error: no space left to write {out / 'checkpoint.pt'}")
    assert "EFBIG" in error and "no checkpoint.pt was written" in error
    assert not list(out.glob(".checkpoint.pt.*"))  # no temporary file left
    assert (out / "config.yaml").exists()  # what was written before stays


def test_a_full_tmpfs_keeps_the_previous_checkpoint(files, tmp_path):
    """A real ENOSPC: a 100 KiB tmpfs holds one checkpoint but not the next one beside it
    (an atomic write needs both for a moment)."""
    unshare = shutil.which("unshare")
    mount = tmp_path / "small"
    mount.mkdir()
    if unshare is None:
        pytest.skip("no unshare(1) to mount a tmpfs of the test's own")
    probe = subprocess.run([unshare, "-rm", "mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs",
                            str(mount)], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {probe.stderr.strip()}")
    out = mount / "run"
    script = (f"mount -t tmpfs -o size=100k tmpfs {mount} && "
              + " ".join(map(str, train_args(files, out, 2)))
              + f"; code=$?; cp -r {mount} {tmp_path / 'kept'}; exit $code")
    proc = subprocess.run([unshare, "-rm", "sh", "-c", script], capture_output=True, text=True,
                          timeout=TIMEOUT, env={**os.environ, "PROXYLESS_CACHE": str(tmp_path)})
    error = one_error_line(proc)
    assert f"no space left to write {out / 'checkpoint.pt'}" in error
    assert "ENOSPC" in error and "the previous checkpoint.pt is intact" in error
    assert "--resume" in error
    kept = tmp_path / "kept" / "run"
    assert torch.load(kept / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not list(kept.glob(".checkpoint.pt.*"))


def test_the_cause_is_found_however_the_writer_wraps_it(tmp_path):
    import errno

    def wrapping_writer(f) -> None:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None

    with pytest.raises(RuntimeError) as caught:
        wrapping_writer(None)
    assert no_room_cause(caught.value).errno == errno.ENOSPC  # the context, not the cause
    with pytest.raises(ProxylessError, match="no space left to write .*ENOSPC"):
        replace_atomically(tmp_path / "x.pt", wrapping_writer)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="other"):  # anything else stays itself
        replace_atomically(tmp_path / "x.pt", lambda f: (_ for _ in ()).throw(
            RuntimeError("other")))
