"""Every bad input ends as one clear error (exit code 2), never a traceback, hang or silent
acceptance (issue #12): option values, --out paths, empty data, gzip bombs, huge spaces."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from proxyless.cli import main
from proxyless.errors import ProxylessError

FASHION = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """(exit code, stderr) of `proxyless ARGV`; argparse's own errors exit with code 2."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def idx_bytes(shape: tuple[int, ...], data: bytes) -> bytes:
    return bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + data


def fashion_folder(directory: Path, n_train: int = 20, n_test: int = 10) -> Path:
    """The four Fashion-MNIST IDX files (gzipped) with n_train / n_test images."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, n in zip(FASHION, (n_train, n_train, n_test, n_test), strict=True):
        shape = (n, 28, 28) if "images" in stem else (n,)
        data = bytes(int(np.prod(shape))) if "images" in stem else bytes(i % 10 for i in range(n))
        (directory / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(shape, data)))
    return directory


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    from proxyless import Architecture, load_space

    return Architecture.uniform(load_space("fashion"), "k3e3").save(tmp_path / "a.json")


@pytest.fixture
def table_file(tmp_path: Path) -> Path:
    from proxyless.latency.table import LatencyTable

    return LatencyTable(meta={"space": "fashion"}).save(tmp_path / "table.json")


# -- 1. option values -------------------------------------------------------------------
@pytest.mark.parametrize("argv, option", [
    (["search", "--val-size", "inf"], "--val-size"),
    (["search", "--val-size", "nan"], "--val-size"),
    (["search", "--target-ms", "inf"], "--target-ms"),
    (["search", "--target-ms", "nan"], "--target-ms"),
    (["search", "--target-ms=-2"], "--target-ms"),
    (["search", "--target-mflops", "inf"], "--target-mflops"),
    (["search", "--arch-lr", "inf"], "--arch-lr"),
    (["search", "--reward-w", "nan"], "--reward-w"),
    (["train", "a.json", "--lr", "nan"], "--lr"),
    (["train", "a.json", "--dropout=-inf"], "--dropout"),
    (["train", "a.json", "--seed=-1"], "--seed"),
    (["train", "a.json", "--seed", str(2**63)], "--seed"),
    (["train", "a.json", "--epochs", "0"], "--epochs"),
    (["inspect", "imagenet", "--input-size", "0"], "--input-size"),
    (["profile", "--space", "fashion", "--min-time", "inf"], "--min-time"),
    (["profile", "--space", "fashion", "--min-time", "nan"], "--min-time"),
    (["profile", "--space", "fashion", "--batch", "0"], "--batch"),
    (["latency-check", "--table", "t.json", "--samples=-3"], "--samples"),
    (["run", "--profile-min-time", "inf"], "--profile-min-time"),
    (["run", "--retrain-epochs", "0"], "--retrain-epochs"),
])
def test_bad_option_values_are_refused_by_name(capsys, argv, option):
    needs_out = argv[0] in ("search", "train", "profile")
    code, err = run_cli(capsys, *argv, *(["--out", "never-made"] if needs_out else []))
    assert code == 2
    assert f"argument {option}: must be" in err and repr(argv[-1].split("=")[-1]) in err
    assert not Path("never-made").exists()


def test_a_pasted_blob_is_quoted_short(capsys):
    code, err = run_cli(capsys, "search", "--out", "x", "--lr", "9" * 5000)
    assert code == 2 and "argument --lr" in err and len(err.splitlines()[-1]) < 200


# -- 2. --out paths that cannot be written -------------------------------------------------
@pytest.mark.parametrize("command", ["train", "search", "run", "profile"])
@pytest.mark.parametrize("under", [False, True], ids=["is-a-file", "under-a-file"])
def test_out_that_cannot_be_a_folder(capsys, tmp_path, arch_file, command, under):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    out = blocker / "sub" if under else blocker
    if command == "profile" and not under:  # profile's --out is a file: a folder can't be
        out = tmp_path
    argv = {"train": ["train", arch_file, "--data", "builtin"],
            "search": ["search", "--data", "builtin", "--target-mflops", "5"],
            "run": ["run", "--data", "builtin"],
            "profile": ["profile", "--space", "fashion", "--min-time", "0"]}[command]
    code, err = run_cli(capsys, *argv, "--out", out, "--no-progress")
    assert code == 2 and err.startswith("proxyless: error: --out") and err.count("\n") == 1
    assert ("a file" in err or "is a folder" in err) and blocker.read_text() == "not a folder"


def test_plot_is_checked_before_measuring(capsys, tmp_path, table_file, monkeypatch):
    def measure(*args, **kwargs):
        raise AssertionError("measured before the plot path was checked")

    monkeypatch.setattr("proxyless.cli.latency.latency_check", measure)
    (tmp_path / "afile").write_text("")
    code, err = run_cli(capsys, "latency-check", "--table", table_file, "--samples", "3",
                        "--plot", tmp_path / "afile" / "p.png")
    assert code == 2 and "--plot" in err and "afile is a file" in err


@pytest.mark.parametrize("argv", [
    ["profile", "--space", "fashion", "--min-time", "0", "--out", "/proc/proxyless/t.json"],
    ["latency-check", "--samples", "3", "--plot", "/proc/proxyless/p.png"],
    ["search", "--data", "builtin", "--target-mflops", "5", "--out", "/proc/proxyless/run"],
    ["train", "ARCH", "--data", "builtin", "--out", "/proc/proxyless/run"],
    ["run", "--data", "builtin", "--out", "/proc/sys/proxyless"],
    ["profile", "--space", "fashion", "--kit", "/proc/proxyless/kit"],
])
def test_outputs_on_a_virtual_file_system_are_one_line_errors(capsys, arch_file, table_file,
                                                              argv):
    """/proc passes the permission checks (root may write in it) and then refuses mkdir."""
    if not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    argv = [arch_file if a == "ARCH" else a for a in argv]
    if argv[0] == "latency-check":
        argv[1:1] = ["--table", table_file]
    code, err = run_cli(capsys, *argv, "--no-progress")
    assert code == 2 and err.startswith("proxyless: error: --") and err.count("\n") == 1
    assert "/proc/" in err and "choose another" in err


def test_out_without_permission(tmp_path, monkeypatch):
    import os

    from proxyless.engine.runtime import prepare_out_dir

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as root, chmod won't do
    with pytest.raises(ProxylessError, match="no permission to write in"):
        prepare_out_dir(tmp_path / "new" / "run")
    assert not (tmp_path / "new").exists()


# -- 3. a failed command leaves no empty --out behind ---------------------------------------
def test_failed_train_removes_the_folder_it_made(capsys, tmp_path, arch_file):
    out, kept = tmp_path / "run", tmp_path / "existing"
    kept.mkdir()
    for folder in (out, kept):  # 7000 > the 6000 training images: fails after making --out
        code, err = run_cli(capsys, "train", arch_file, "--data", "builtin", "--batch-size",
                            "7000", "--out", folder, "--no-progress")
        assert code == 2 and "lower --batch-size" in err
    assert not out.exists() and kept.is_dir()  # made by it: removed; there before: kept


def test_remove_if_empty_never_removes_files(tmp_path):
    from proxyless.engine.runtime import remove_if_empty

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "c").mkdir()
    (tmp_path / "a" / "c" / "f").write_text("x")
    assert not remove_if_empty(tmp_path / "a") and (tmp_path / "a" / "b").is_dir()
    (tmp_path / "a" / "c" / "f").unlink()
    assert remove_if_empty(tmp_path / "a") and not (tmp_path / "a").exists()


# -- 4. data --------------------------------------------------------------------------------
def test_empty_data_names_the_file(capsys, tmp_path, arch_file):
    data = fashion_folder(tmp_path / "data", n_train=0)
    code, err = run_cli(capsys, "train", arch_file, "--data-dir", data, "--out",
                        tmp_path / "run", "--no-progress")
    assert code == 2 and "train-images-idx3-ubyte.gz holds no images" in err
    assert "batch" not in err and not (tmp_path / "run").exists()


def test_gzip_bomb_is_read_bounded(capsys, tmp_path, arch_file):
    data = fashion_folder(tmp_path / "data")
    bomb = gzip.compress(idx_bytes((20, 28, 28), bytes(200 * 2**20)), compresslevel=1)
    assert len(bomb) < 2**20  # 200 MiB of zeros claimed to be 15 kB of images
    (data / "train-images-idx3-ubyte.gz").write_bytes(bomb)
    code, err = run_cli(capsys, "train", arch_file, "--data-dir", data, "--out",
                        tmp_path / "run", "--no-progress")
    assert code == 2 and "expected 15680 data bytes, got more than 15680" in err


def test_absurd_idx_header_is_refused(tmp_path):
    from proxyless.data import read_idx

    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes((60000, 60000, 60000), b"\0" * 100)))
    with pytest.raises(ProxylessError, match=r"GiB\), over the 2 GiB limit"):
        read_idx(path)


# -- 5. a space too large to build ----------------------------------------------------------
@pytest.mark.parametrize("size, width, message", [
    (28, 20000, "its supernet would hold 64.9G parameters"),
    (100000, 16, "too large to train: the largest network's activations take"),
])
def test_space_too_large_is_refused_before_building(capsys, tmp_path, size, width, message):
    space = tmp_path / "huge.yaml"
    space.write_text(f"name: huge\ninput_size: {size}\nin_channels: 1\nnum_classes: 10\n"
                     f"stages: [{{width: {width}, depth: 4, stride: 2}}]\n")
    for argv in (["search", "--target-mflops", "5"], ["profile", "--min-time", "0"]):
        code, err = run_cli(capsys, *argv, "--space", space, "--out", tmp_path / "o",
                            "--no-progress")
        assert code == 2 and "space 'huge'" in err and message in err
    assert not (tmp_path / "o").exists()


def test_batch_too_large_for_memory_says_what_fits(capsys, arch_file, tmp_path):
    code, err = run_cli(capsys, "train", arch_file, "--batch-size", "10000000", "--out",
                        tmp_path / "run")
    assert code == 2 and "--batch-size 10000000 is too large" in err and "at most" in err


def test_a_damaged_saved_step_of_a_run_says_remove_it(tmp_path):
    from proxyless.pipeline.run import _epoch_records, _saved

    summary = tmp_path / "summary.json"
    summary.write_text('{"arch": "k3e3"')  # cut short by a crash
    with pytest.raises(ProxylessError, match="summary.json"):
        _saved(summary, ("arch",))
    summary.write_text('{"arch": "k3e3"}')
    with pytest.raises(ProxylessError, match="lacks measured_ms.*remove it"):
        _saved(summary, ("arch", "measured_ms"))
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_bytes(b'{"train_top1": 1, "test_top1": 2}\n\xff\xfe')
    said = []
    assert _epoch_records(metrics, said.append) == []
    assert "damaged" in said[0]


@pytest.mark.parametrize("changes", [{"lr": float("inf")}, {"target": float("nan")},
                                     {"arch_lr": float("inf")}, {"seed": -1},
                                     {"seed": 2**63}])
def test_library_configs_refuse_non_finite_numbers_and_bad_seeds(changes):
    from proxyless.search.config import SearchConfig
    from proxyless.training.trainer import TrainConfig

    name = next(iter(changes))
    with pytest.raises(ProxylessError, match=name):
        SearchConfig(**changes).validate()
    if name in ("lr", "seed"):
        with pytest.raises(ProxylessError, match=name):
            TrainConfig(**changes).validate()


def test_the_timer_refuses_a_min_time_that_never_ends():
    from proxyless.latency.timer import Timer

    for bad in (float("inf"), float("nan"), -1.0):
        with pytest.raises(ProxylessError, match="--min-time"):
            Timer(min_time=bad)
