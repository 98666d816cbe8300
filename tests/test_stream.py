"""Image folders streamed from disk: the index and its cache, layouts and splits, odd files,
crops, the order of batches (workers, epochs, ranks), the bad-share stop, and the loops and
model files that read them."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from proxyless.data import FolderSet, StreamBatches, load_data, make_batches, read_images
from proxyless.data import folder_index as folder_index_module
from proxyless.data.decode import Crop, UnreadableImage, centre_box, decode, random_resized_box
from proxyless.data.folder_index import index_folder
from proxyless.data.stream import BAD_MIN, UnreadableImageWarning
from proxyless.errors import ProxylessError

CLASSES = ("ant", "bee", "cat")
LEVELS = {"ant": 40, "bee": 130, "cat": 210}


def write_jpeg(path, level, rng, size=None, mode="RGB", fmt="JPEG"):
    w, h = size or (int(rng.integers(60, 120)), int(rng.integers(60, 120)))
    pixels = np.clip(rng.normal(level, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path, fmt)


def make_folder(root, per_class=8, splits=("train", "val"), seed=0):
    rng = np.random.default_rng(seed)
    for split in splits:
        for c in CLASSES:
            for i in range(per_class):
                write_jpeg(root / split / c / f"{c}_{i}.JPEG", LEVELS[c], rng)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train/ (10 per class) and val/ (4 per class) of small JPEGs; class = brightness."""
    root = tmp_path_factory.mktemp("photos")
    make_folder(root, 10, ("train",))
    make_folder(root, 4, ("val",), seed=1)
    return root


def load(root, size=32, channels=3, **options):
    options.setdefault("val_size", 0)
    return load_data(None, root, image_size=size, channels=channels, notify=None,
                     data_mode="stream", **options)


# ------------------------------------------------------------------------- index and layouts

def test_index_lists_classes_and_files_compactly_and_is_cached(folder, monkeypatch):
    index = index_folder(folder / "train")
    assert index.classes == CLASSES and len(index) == 30
    assert np.bincount(index.labels).tolist() == [10, 10, 10]
    assert index.path(0) == (folder / "train" / "ant" / "ant_0.JPEG").resolve()
    assert index.nbytes < 30 * 40  # names, an offset and a label per file: no Python objects
    # the second start reads the cache: listing is not called again
    monkeypatch.setattr(folder_index_module, "_list", lambda *a: pytest.fail("listed again"))
    again = index_folder(folder / "train")
    assert np.array_equal(again.labels, index.labels) and again.path(29) == index.path(29)


def test_index_cache_follows_the_folder(tmp_path):
    root = make_folder(tmp_path / "d", 3, ("train",))
    assert len(index_folder(root / "train")) == 9
    write_jpeg(root / "train" / "bee" / "new.jpg", 10, np.random.default_rng(0))
    assert len(index_folder(root / "train")) == 10  # the class folder's time changed
    (root / "train" / "cat" / "cat_0.JPEG").unlink()
    assert len(index_folder(root / "train")) == 9


def test_a_damaged_index_cache_is_listed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXYLESS_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "d", 2, ("train",))
    index_folder(root / "train")
    for damage in (b"not an npz", b"", b"PK\x03\x04garbled zip"):
        for cached in (tmp_path / "cache" / "image-index").glob("*.npz"):
            cached.write_bytes(damage)
        assert len(index_folder(root / "train")) == 6


def test_layouts_train_val_train_test_and_flat(tmp_path, folder):
    data = load(folder)
    assert (len(data.train), len(data.test)) == (30, 12) and data.train.classes == CLASSES
    assert data.streams and data.transform["mode"] == "stream"
    tested = make_folder(tmp_path / "t", 2, ("train", "test"))
    assert len(load(tested).test) == 6
    flat = make_folder(tmp_path / "flat", 10, (".",))
    a, b = load(flat), load(flat)
    assert len(a.train) == 27 and len(a.test) == 3  # a seeded, class-balanced 10% hold-out
    test_files = {a.test.path(i) for i in range(len(a.test))}
    assert test_files == {b.test.path(i) for i in range(len(b.test))}
    assert not test_files & {a.train.path(i) for i in range(len(a.train))}
    assert sorted(a.test.labels.tolist()) == [0, 1, 2]


def test_val_size_holds_out_of_train_disjointly(folder):
    data = load(folder, val_size=6)
    train = {data.train.path(i) for i in range(len(data.train))}
    val = {data.val.path(i) for i in range(len(data.val))}
    assert len(val) == 6 and len(train) == 24 and not train & val
    assert np.bincount(data.val.labels.numpy()).tolist() == [2, 2, 2]


def test_folder_errors_are_clear(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProxylessError, match="cannot tell the data format"):
        load(tmp_path / "empty")
    both = make_folder(tmp_path / "both", 1, ("train", "val", "test"))
    with pytest.raises(ProxylessError, match="both val/ and test/"):
        load(both)
    one = make_folder(tmp_path / "one", 1, ("train",))
    (one / "other").mkdir()
    (one / "other" / "x.jpg").write_bytes(b"")
    with pytest.raises(ProxylessError, match="only one of train/ and val/"):
        load(one)
    hollow = make_folder(tmp_path / "hollow", 1, ("train", "val"))
    (hollow / "val" / "ant" / "ant_0.JPEG").unlink()
    with pytest.raises(ProxylessError, match="holds no images"):
        load(hollow)
    other = make_folder(tmp_path / "other", 1, ("train", "val"))
    (other / "val" / "ant").rename(other / "val" / "ape")
    with pytest.raises(ProxylessError, match="same class folders"):
        load(other)
    with pytest.raises(ProxylessError, match="reads image folders"):
        load_data("builtin", data_mode="stream", notify=None)
    with pytest.raises(ProxylessError, match="--crop-scale"):
        load(both, crop_scale=(0.5, 0.2))


def test_auto_mode_streams_photo_sized_inputs_and_keeps_small_ones_in_memory(folder):
    auto = {size: load_data(None, folder, image_size=size, channels=3, val_size=0,
                            notify=None) for size in (32, 64)}
    assert not auto[32].streams and auto[32].train.images.shape == (30, 3, 32, 32)
    assert auto[64].streams and isinstance(auto[64].train, FolderSet)
    memory = load_data(None, folder, image_size=64, channels=3, val_size=0, notify=None,
                       data_mode="memory")
    assert not memory.streams


# ------------------------------------------------------------------------------ odd files

def test_odd_files_load_as_rgb_or_gray(tmp_path):
    rng = np.random.default_rng(0)
    files = {"cmyk.JPEG": ("CMYK", "JPEG"), "gray.JPEG": ("L", "JPEG"),
             "png.JPEG": ("RGB", "PNG"), "palette.png": ("P", "PNG"), "rgba.png": ("RGBA", "PNG")}
    for name, (mode, fmt) in files.items():
        write_jpeg(tmp_path / name, 120, rng, (90, 70), mode, fmt)
    for name in files:
        for channels in (3, 1):
            pixels = decode(tmp_path / name, Crop(24, channels))
            assert pixels.shape == (24, 24, channels) and pixels.dtype == np.uint8
            assert 60 < pixels.mean() < 200, name  # the picture, not black or garbage


def test_broken_files_raise_unreadable(tmp_path):
    rng = np.random.default_rng(0)
    write_jpeg(tmp_path / "ok.jpg", 100, rng, (80, 80))
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[:len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    for name in ("truncated.jpg", "empty.jpg", "text.jpg"):
        with pytest.raises(UnreadableImage):
            decode(tmp_path / name, Crop(16, 3))


def test_random_resized_box_and_centre_box():
    rng = random.Random(0)
    for _ in range(500):
        left, top, right, bottom = random_resized_box(300, 200, rng, (0.08, 1.0))
        assert 0 <= left < right <= 300 and 0 <= top < bottom <= 200
        assert 0.079 * 300 * 200 <= (right - left) * (bottom - top) <= 300 * 200 * 1.01
    assert centre_box(400, 200, 224) == (112.5, 12.5, 287.5, 187.5)


def test_color_jitter_changes_colours_as_the_reference_code_and_only_in_training(tmp_path):
    rng = np.random.default_rng(0)
    write_jpeg(tmp_path / "a.jpg", 120, rng, (80, 60))
    write_jpeg(tmp_path / "g.png", 120, rng, (80, 60), mode="L", fmt="PNG")
    plain, normal, strong = (decode(tmp_path / "a.jpg", Crop(32, 3, True, color_jitter=j),
                                    random.Random(7)) for j in ("none", "normal", "strong"))
    again = decode(tmp_path / "a.jpg", Crop(32, 3, True, color_jitter="strong"),
                   random.Random(7))
    assert np.array_equal(strong, again)  # seeded: the same draw gives the same image
    assert not np.array_equal(plain, normal) and not np.array_equal(plain, strong)
    gray = decode(tmp_path / "g.png", Crop(32, 1, True, color_jitter="strong"), random.Random(7))
    assert gray.shape == (32, 32, 1)  # brightness and contrast only
    centre = Crop(32, 3, False, color_jitter="strong")  # evaluation never jitters
    assert np.array_equal(decode(tmp_path / "a.jpg", centre), decode(tmp_path / "a.jpg",
                                                                     Crop(32, 3)))


def test_a_streamed_training_with_color_jitter_records_it_in_the_model_file(tmp_path, folder):
    from proxyless.cli import main
    from proxyless.deploy import load_model

    arch, out = tmp_path / "arch.json", tmp_path / "run"
    _tiny_arch().save(arch)
    assert main(["train", str(arch), "--data-dir", str(folder), "--data-mode", "stream",
                 "--epochs", "1", "--batch-size", "8", "--workers", "0",
                 "--color-jitter", "normal", "--out", str(out), "--no-progress"]) == 0
    transform = load_model(out).info.data["transform"]
    assert transform["mode"] == "stream" and transform["color_jitter"] == "normal"
    # the retraining can start from it: a model file of the same architecture
    again = tmp_path / "again"
    assert main(["train", str(arch), "--data-dir", str(folder), "--data-mode", "stream",
                 "--epochs", "1", "--batch-size", "8", "--workers", "0",
                 "--init-from", str(out / "model.pt"), "--out", str(again),
                 "--no-progress"]) == 0


def test_color_jitter_of_images_in_memory_says_it_is_not_done(builtin_subset):
    from proxyless.errors import ProxylessWarning

    data = builtin_subset(100, 0, 50)
    with pytest.warns(ProxylessWarning, match=r"colour jitter \(normal\) .* not jittered"):
        make_batches(data.train, 50, color_jitter="normal", mean=data.mean, std=data.std,
                     shuffle=True, augment=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_batches(data.train, 50, mean=data.mean, std=data.std, shuffle=True, augment=True)


def _tiny_arch():
    from proxyless.model.architecture import Architecture
    from proxyless.model.space import SearchSpace, StageSpec

    space = SearchSpace(name="tiny", input_size=32, in_channels=3, num_classes=3,
                        stages=(StageSpec(8, 1, 2),), candidates=("k3e3", "zero"),
                        feature_mix=16)
    return Architecture(space, ("k3e3",))


def test_reduced_jpeg_decoding_matches_a_full_decode(tmp_path):
    """A 1000 px photo centre-cropped to 64 px is decoded at 1/8 scale: the pixels still
    agree with decoding it whole and resizing (mean difference within a few levels)."""
    y, x = np.mgrid[0:1000, 0:1000]
    pixels = np.stack([x % 256, y % 256, (x + y) // 8 % 256], -1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)
    fast = decode(tmp_path / "big.jpg", Crop(64, 3)).astype(float)
    with Image.open(tmp_path / "big.jpg") as image:
        full = np.asarray(image.convert("RGB").resize(
            (64, 64), Image.Resampling.BILINEAR, box=centre_box(1000, 1000, 64))).astype(float)
    assert np.abs(fast - full).mean() < 6


# --------------------------------------------------------------------------------- batches

def epoch_batches(batches, epoch):
    batches.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in batches]


def test_batches_are_uint8_until_normalized_and_channels_last(folder):
    data = load(folder)
    batches = make_batches(data.train, 8, mean=data.mean, std=data.std, shuffle=True,
                           augment=True, workers=0)
    assert isinstance(batches, StreamBatches) and len(batches) == 4
    x, y = next(iter(batches))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert abs(x.mean().item()) < 1.5  # normalized with the sampled statistics


def test_order_and_crops_depend_on_seed_epoch_and_rank_only(folder):
    data = load(folder)
    common = dict(mean=data.mean, std=data.std, shuffle=True, augment=True, seed=3)
    serial = StreamBatches(data.train, 8, workers=0, **common)
    parallel = StreamBatches(data.train, 8, workers=2, **common)
    for epoch in (0, 1):
        a, b = epoch_batches(serial, epoch), epoch_batches(parallel, epoch)
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb)
                   for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    # a fresh object at epoch 1 (a resumed run) sees epoch 1's batches
    resumed = epoch_batches(StreamBatches(data.train, 8, workers=0, **common), 1)
    assert all(torch.equal(x, xr) for (x, _), (xr, _) in zip(a, resumed, strict=True))
    assert not torch.equal(epoch_batches(serial, 0)[0][0], a[0][0])  # epochs differ


def test_an_epoch_resumed_at_a_batch_yields_the_rest_of_the_same_pass(folder, builtin_subset):
    """`iterate(k)` (a run resumed inside an epoch): the batches k.. of an uninterrupted pass,
    crops and flips included, for streamed and in-memory batches; the next pass is whole."""
    data = load(folder)
    common = dict(mean=data.mean, std=data.std, shuffle=True, augment=True, seed=3)
    memory = builtin_subset(64, 0, 8)
    for batches in (StreamBatches(data.train, 8, workers=1, **common),
                    make_batches(memory.train, 8, mean=memory.mean, std=memory.std,
                                 shuffle=True, augment=True, seed=3)):
        whole = epoch_batches(batches, 1)
        batches.set_epoch(1)
        rest = [(x.clone(), y.clone()) for x, y in batches.iterate(2)]
        assert len(rest) == len(whole) - 2
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb)
                   for (xa, ya), (xb, yb) in zip(whole[2:], rest, strict=True))
        assert len(epoch_batches(batches, 1)) == len(whole)  # the start was one pass's


def test_rank_shards_are_disjoint_and_cover_the_set(folder):
    data = load(folder)
    seen = []
    for rank in (0, 1):
        batches = StreamBatches(data.test, 5, mean=data.mean, std=data.std, shuffle=False,
                                augment=False, pad=False, rank=rank, world_size=2, workers=0)
        keys = [key for batch in batches._plan() for key, _ in batch]
        seen.append(set(keys))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(len(data.test)))
    trains = [StreamBatches(data.train, 4, mean=data.mean, std=data.std, shuffle=True,
                            augment=True, rank=r, world_size=2, drop_last=True, workers=0)
              for r in (0, 1)]
    plans = [[k for batch in t._plan() for k, _ in batch] for t in trains]
    assert len(plans[0]) == len(plans[1]) and not set(plans[0]) & set(plans[1])


def test_unreadable_files_are_skipped_counted_and_named(tmp_path):
    root = make_folder(tmp_path / "d", 10, ("train", "val"))
    (root / "train" / "ant" / "ant_3.JPEG").write_bytes(b"")
    good = (root / "train" / "bee" / "bee_1.JPEG").read_bytes()
    (root / "train" / "bee" / "bee_1.JPEG").write_bytes(good[:len(good) // 3])
    data = load(root)
    batches = StreamBatches(data.train, 10, mean=data.mean, std=data.std, shuffle=True,
                            augment=True, workers=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sizes = [len(y) for _, y in batches]
    assert sum(sizes) == 28 and len(batches.skipped) == 2
    named = " ".join(str(w.message) for w in caught if w.category is UnreadableImageWarning)
    assert "ant_3.JPEG" in named and "bee_1.JPEG" in named
    batches.set_epoch(1)
    assert batches.skipped == {}


def test_too_many_unreadable_files_stop_with_examples(tmp_path):
    root = make_folder(tmp_path / "d", 10, ("train", "val"))
    for i in range(BAD_MIN + 1):
        (root / "train" / CLASSES[i % 3] / f"{CLASSES[i % 3]}_{i // 3}.JPEG").write_bytes(b"x")
    data = load(root)
    batches = StreamBatches(data.train, 5, mean=data.mean, std=data.std, shuffle=False,
                            augment=False, workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ProxylessError, match=r"could not be read.*/ant_0\.JPEG.*--resume"):
            list(batches)


def test_read_images_and_read_give_centre_crops_in_order(folder):
    data = load(folder)
    chunks = list(read_images(data.test, 5, workers=2))
    images = torch.cat([c[0] for c in chunks])
    assert images.shape == (12, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(torch.cat([c[1] for c in chunks]), data.test.labels)
    assert torch.equal(images[3:5], data.test.readable([3, 4])[0])


# ----------------------------------------------------------------- the loops and model files

def test_train_on_a_streamed_folder_records_its_transform(tmp_path, folder):
    from proxyless.deploy import evaluate_file, load_model
    from proxyless.model.architecture import Architecture
    from proxyless.model.space import SearchSpace, StageSpec
    from proxyless.training.trainer import TrainConfig, train_network

    space = SearchSpace(name="tiny", input_size=32, in_channels=3, num_classes=3,
                        stages=(StageSpec(8, 1, 2),), candidates=("k3e3", "zero"),
                        feature_mix=16)
    data = load(folder)
    out = tmp_path / "run"
    final = train_network(Architecture(space, ("k3e3",)), data,
                          TrainConfig(epochs=2, batch_size=8, workers=0), out, progress=False,
                          log=lambda m: None)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["skipped_images"] for m in metrics] == [0, 0]
    info = load_model(out).info
    assert info.data["transform"] == data.transform and info.data["name"] == "imagefolder"
    # evaluated later, the test images are cropped as training cropped them
    assert evaluate_file(out / "model.pt")["test_top1"] == pytest.approx(final.test_top1)
    # predict reads files as evaluation cropped them, from the model file or its CLI
    from proxyless.cli import main
    from proxyless.deploy.evaluate import predict_files

    paths = [data.test.path(i) for i in range(5)]
    expected = load_model(out).predict(data.test.readable(range(5))[0]).tolist()
    assert [r["top"][0]["index"] for r in predict_files(out, paths, top=2)] == expected
    assert main(["predict", str(out), *paths[:2], "--json"]) == 0
    assert main(["predict", str(out), str(tmp_path / "missing.jpg")]) == 2  # one clear line


RANK_SCRIPT = """
import sys, torch
from pathlib import Path
from proxyless.engine import distributed
from proxyless.data import load_data
from proxyless.search import SearchConfig, search
from proxyless.latency.cost import flops_model
from proxyless.model.space import SearchSpace, StageSpec

out = Path(sys.argv[2])
space = SearchSpace(name="tiny", input_size=32, in_channels=3, num_classes=3,
                    stages=(StageSpec(8, 1, 2), StageSpec(16, 2, 2)),
                    candidates=("k3e3", "k5e6", "zero"), feature_mix=16)
info = distributed.setup("cpu")
data = load_data(None, sys.argv[1], image_size=32, channels=3, val_size=9, notify=None,
                 data_mode="stream")
config = SearchConfig(epochs=2, warmup_epochs=0, batch_size=4, arch_every=1, workers=1,
                      target=1.0, metric="flops")
result = search(space, data, flops_model(space), config, out / "search", progress=False,
                log=lambda m: None)
alpha = torch.cat([a.detach().flatten() for a in result.supernet.arch_parameters()])
(out / f"rank{info.rank}.txt").write_text(result.arch.encode() + "\\n" + repr(alpha.tolist()))
distributed.finish()
"""


@pytest.mark.slow
def test_two_ranks_stream_disjoint_shards_and_agree_on_the_architecture(tmp_path, folder):
    import os
    import subprocess
    import sys

    (tmp_path / "ranks.py").write_text(RANK_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(tmp_path / "ranks.py"), str(folder), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert ranks[0] == ranks[1]  # the same α to the last bit, so the same architecture
    assert len((tmp_path / "search" / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_cli_run_on_a_streamed_folder_sizes_the_classifier_and_reports(tmp_path, folder,
                                                                       capsys):
    """`proxyless run` end to end on a folder of photos with a 10-class space: the classifier
    is sized to the folder's 3 classes, the run profiles, searches, retrains, exports and
    reports, and its model evaluates its streamed test images as training cropped them."""
    from proxyless.cli import main
    from proxyless.deploy import evaluate_file, load_model
    from proxyless.files import write_mapping_atomic
    from proxyless.model.space import SearchSpace, StageSpec

    space = SearchSpace(name="tiny-photos", input_size=32, in_channels=3, num_classes=10,
                        stages=(StageSpec(8, 1, 2), StageSpec(16, 1, 2)),
                        candidates=("k3e3", "k5e3", "zero"), feature_mix=16)
    write_mapping_atomic(tmp_path / "space.json", space.to_dict())
    code = main(["run", "--space", str(tmp_path / "space.json"), "--data", str(folder),
                 "--data-mode", "stream", "--workers", "1", "--crop-scale", "0.35", "1",
                 "--val-size", "12", "--epochs", "2", "--warmup-epochs", "1",
                 "--batch-size", "8", "--arch-every", "1", "--retrain-epochs", "1",
                 "--profile-min-time", "0.01", "--out", str(tmp_path / "run"),
                 "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    assert "classifier is sized to 3" in out.out + out.err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test_images"] == 12 and (tmp_path / "run" / "report.md").is_file()
    model = load_model(tmp_path / "run")
    assert model.classes == CLASSES and model.info.data["transform"]["crop_scale"] == [0.35, 1]
    final = json.loads((tmp_path / "run" / "retrain" / "final.json").read_text())
    assert evaluate_file(tmp_path / "run")["test_top1"] == pytest.approx(final["test_top1"])


def tiny_photo_arch():
    from proxyless.model.architecture import Architecture
    from proxyless.model.space import SearchSpace, StageSpec

    space = SearchSpace(name="tiny", input_size=32, in_channels=3, num_classes=3,
                        stages=(StageSpec(8, 1, 2),), candidates=("k3e3", "zero"),
                        feature_mix=16)
    return Architecture(space, ("k3e3",))


def test_resume_of_a_streamed_run_is_exact_whatever_the_workers(tmp_path, folder, monkeypatch):
    """Interrupted in epoch 2 and resumed with another worker count, a streamed run ends
    with the very weights of an uninterrupted one."""
    from conftest import interrupted_in_epoch
    from proxyless.deploy import load_model
    from proxyless.training.trainer import TrainConfig, train_network

    data, arch = load(folder), tiny_photo_arch()
    full = train_network(arch, data, TrainConfig(epochs=3, batch_size=8, workers=2),
                         tmp_path / "a", progress=False, log=lambda m: None)
    with interrupted_in_epoch(monkeypatch, 2), pytest.raises(KeyboardInterrupt):
        train_network(arch, data, TrainConfig(epochs=3, batch_size=8, workers=0),
                      tmp_path / "b", progress=False, log=lambda m: None)
    resumed = train_network(arch, data, TrainConfig(epochs=3, batch_size=8, workers=1),
                            tmp_path / "b", resume=True, progress=False, log=lambda m: None)
    assert resumed.test_top1 == full.test_top1
    a, b = (load_model(tmp_path / d).state_dict() for d in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_unreadable_class_folder_is_a_clear_error(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "d", 2, ("train", "val"))
    real_scandir = folder_index_module.os.scandir

    def scandir(path):
        if str(path).endswith("bee"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(folder_index_module.os, "scandir", scandir)
    with pytest.raises(ProxylessError, match=r"cannot list class folder .*bee: Permission"):
        load(root)


def test_evaluation_survives_unreadable_files_and_counts_each_once(tmp_path):
    root = make_folder(tmp_path / "d", 4, ("train", "val"))
    (root / "val" / "cat" / "cat_3.JPEG").write_bytes(b"")  # the last test image, alone
    data = load(root)
    tests = StreamBatches(data.test, 11, mean=data.mean, std=data.std, shuffle=False,
                          augment=False, pad=False, workers=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # read twice in one epoch: one skipped file, one warning
            assert sum(len(y) for _, y in tests) == 11
    assert list(tests.skipped) == [data.test.path(11)]
    assert sum(w.category is UnreadableImageWarning for w in caught) == 1
    with pytest.warns(UnreadableImageWarning, match="cat_3"):  # checks, calibrations skip it
        images, labels = data.test.readable(range(12))
    assert len(images) == len(labels) == 11
    with pytest.raises(ProxylessError, match="read at 32 px but the network takes 64"):
        StreamBatches(data.test, 4, mean=data.mean, std=data.std, shuffle=False,
                      augment=False, image_size=64)


def test_resume_with_other_crops_is_refused(tmp_path, folder):
    from proxyless.training.trainer import TrainConfig, train_network

    train_network(tiny_photo_arch(), load(folder), TrainConfig(epochs=1, batch_size=8,
                                                                workers=0),
                  tmp_path, progress=False, log=lambda m: None)
    with pytest.raises(ProxylessError, match="--crop-scale"):
        train_network(tiny_photo_arch(), load(folder, crop_scale=(0.5, 1.0)),
                      TrainConfig(epochs=1, batch_size=8, workers=0), tmp_path, resume=True,
                      progress=False, log=lambda m: None)


def test_a_model_file_with_a_bad_transform_is_refused(tmp_path):
    from proxyless.deploy.model_file import ModelInfo

    arch = tiny_photo_arch()
    good = ModelInfo(arch, (0.5,) * 3, (0.2,) * 3, CLASSES).to_metadata()
    for transform in (None, "stream", {"mode": "stream", "size": 64}, {"mode": "other"}):
        bad = {**good, "data": {"transform": transform}}
        with pytest.raises(ProxylessError, match="data.transform"):
            ModelInfo.from_metadata(bad, "model.pt")


def test_the_command_line_shows_each_skipped_image_as_one_plain_line(tmp_path, capsys):
    """Broken files in a streamed folder: one `proxyless: warning:` line per file for the
    whole run (not per epoch), no Python source lines, and each epoch's line counts them."""
    from proxyless.cli import main

    root = make_folder(tmp_path / "d", 4, ("train", "val"))
    broken = [root / "train" / "ant" / "ant_1.JPEG", root / "train" / "bee" / "bee_2.JPEG"]
    for path in broken:
        path.write_bytes(b"not a jpeg")
    tiny_photo_arch().save(tmp_path / "arch.json")
    code = main(["train", str(tmp_path / "arch.json"), "--data", str(root), "--data-mode",
                 "stream", "--workers", "0", "--epochs", "2", "--batch-size", "4",
                 "--out", str(tmp_path / "run"), "--no-progress", "--no-tensorboard"])
    printed = capsys.readouterr()
    err = printed.err
    assert code == 0, err[-2000:]
    lines = [line for line in err.splitlines() if "unreadable image" in line
             and "epoch" not in line]
    assert len(lines) == 2  # two epochs read each broken file: still one line each
    for path in broken:
        assert sum(line.startswith(f"proxyless: warning: skipped unreadable image {path}: ")
                   for line in lines) == 1
    assert ".py:" not in err and "self._note_failures" not in err
    epoch_lines = [line for line in (printed.out + err).splitlines()
                   if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    assert all("skipped 2 unreadable images" in line for line in epoch_lines)


def test_past_a_few_skipped_images_one_line_says_the_rest_are_counted(capsys):
    import warnings

    from proxyless.cli.warning_lines import MAX_SKIPPED_LINES, warning_lines

    with warning_lines():
        for i in range(MAX_SKIPPED_LINES + 5):
            for _ in range(2):  # the same file twice: one line
                warnings.warn(f"skipped unreadable image f{i}.jpg: truncated",
                              UnreadableImageWarning, stacklevel=1)
        warnings.warn("something else\n  on two lines", UserWarning, stacklevel=1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == MAX_SKIPPED_LINES + 2
    assert lines[-2].startswith(f"proxyless: warning: more than {MAX_SKIPPED_LINES}")
    assert lines[-1] == "proxyless: warning: something else on two lines"
