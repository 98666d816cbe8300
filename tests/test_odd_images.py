"""Odd images and folders, as a user would have them on disk: 16-bit PNGs (scaled to 8 bits,
not clipped white), a folder none of whose sampled images can be read (one line, not a
traceback in the statistics pass), a one-class folder (refused: a classifier needs two
classes), and a photo far smaller than the network's input (predicted, with a note)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import small_space
from proxyless.cli import main
from proxyless.data import load_data
from proxyless.data.decode import Crop, decode, squash
from proxyless.errors import ProxylessError
from proxyless.model.architecture import Architecture

# 16-bit grayscale values as a camera or a scanner writes them: 634 .. 64180
WIDE = np.linspace(634, 64180, 40 * 40).reshape(40, 40).round().astype(np.uint16)


def sixteen_bit_png(tmp_path):
    """A 16-bit grayscale PNG and the 8-bit PNG a viewer shows for it."""
    wide, narrow = tmp_path / "wide.png", tmp_path / "narrow.png"
    Image.fromarray(WIDE).save(wide)
    Image.fromarray(np.rint(WIDE * (255 / 65535)).astype(np.uint8)).save(narrow)
    assert Image.open(wide).mode.startswith("I")  # Pillow reads it as 16 bits
    return wide, narrow


@pytest.mark.parametrize("channels", [1, 3])
def test_a_16_bit_png_decodes_as_its_8_bit_version(tmp_path, channels):
    wide, narrow = sixteen_bit_png(tmp_path)
    for train in (False, True):
        crop = Crop(28, channels, train, (0.5, 1.0))
        import random
        a = decode(wide, crop, random.Random(3) if train else None)
        b = decode(narrow, crop, random.Random(3) if train else None)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
        assert 10 < a.mean() < 245  # not all white (Pillow's own conversion clips to 255)
    assert np.abs(squash(wide, 28, channels).astype(int)
                  - squash(narrow, 28, channels).astype(int)).max() <= 1


def test_predict_answers_a_16_bit_png_as_its_8_bit_version(trained_run, tmp_path, capsys):
    wide, narrow = sixteen_bit_png(tmp_path)
    assert main(["predict", str(trained_run), str(wide), str(narrow), "--json"]) == 0
    import json
    results = json.loads(capsys.readouterr().out)
    assert results[0]["top"][0]["class"] == results[1]["top"][0]["class"]
    assert results[0]["top"][0]["probability"] == pytest.approx(
        results[1]["top"][0]["probability"], abs=0.02)


def test_a_far_smaller_image_is_predicted_with_a_note(trained_run, tmp_path, capsys):
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.full((1, 1), 128, np.uint8)).save(tiny)
    assert main(["predict", str(trained_run), str(tiny)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{tiny}: ")
    assert f"note: {tiny} is 1x1 px, far smaller than the network's 28 px input" in \
        captured.err


def unreadable_folder(root):
    """train/ and val/ of two classes whose every file is damaged."""
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                (root / split / c / f"{i}.jpg").write_bytes(b"not a jpeg at all")
    return root


def test_a_folder_of_unreadable_images_is_one_line(tmp_path, trained_run):
    folder = unreadable_folder(tmp_path / "photos")
    with pytest.raises(ProxylessError, match="could be read"):
        load_data(None, folder, image_size=28, channels=1, notify=None, data_mode="stream",
                  val_size=0)
    for args in (["train", str(trained_run / "model.pt"), "--out", str(tmp_path / "t"),
                  "--data", str(folder), "--data-mode", "stream", "--workers", "0"],
                 ["evaluate", str(trained_run / "model.pt"), "--data", str(folder)]):
        if args[0] == "train":  # an architecture file of the same small space
            Architecture(small_space(), ("k3e3", "k5e6", "k5e6", "zero")).save(
                tmp_path / "arch.json")
            args[1] = str(tmp_path / "arch.json")
        proc = subprocess.run([sys.executable, "-m", "proxyless.cli", *args],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("proxyless: error: "), last
        # streamed: none of the images drawn could be read; in memory: the first bad file
        assert "could be read" in last or "cannot read image" in last, last


def test_a_one_class_folder_is_refused(tmp_path):
    root = tmp_path / "one"
    (root / "only").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(np.full((32, 32, 3), i * 40, np.uint8)).save(root / "only" / f"{i}.png")
    with pytest.raises(ProxylessError, match="one class folder .'only'.: a classifier needs at "
                                             "least two"):
        load_data(None, root, image_size=28, channels=3, notify=None)


@pytest.mark.parametrize("option", ["--workers", "--threads"])
def test_thousands_of_processes_or_threads_are_refused_in_one_line(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as stop:
        main(["train", "arch.json", "--out", str(tmp_path / "t"), option, "10000"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: 10000" in err and "at most" in err
    config = tmp_path / "c.yaml"  # from a config file: the same check, naming the key
    config.write_text(f"command: train\noptions:\n  {option[2:]}: 10000\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert f"{option[2:]}: 10000 is not valid" in err and "(4 per core)" in err
    assert not (tmp_path / "t").exists()
