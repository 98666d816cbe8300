"""`proxyless retarget` and `run --from-search`: a finished search's supernet searched again
by architecture steps alone, for other targets and tables; its outputs are a search's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from proxyless.cli import main
from proxyless.errors import ProxylessError
from proxyless.latency.cost import latency_model
from proxyless.latency.table import Entry, LatencyTable
from proxyless.model.layers import candidate_layers, fixed_layers
from proxyless.model.space import SearchSpace, StageSpec
from proxyless.search.outputs import SearchSummary
from proxyless.search.retarget import finished_search, retarget_config, retarget_job


def tiny_space() -> SearchSpace:
    return SearchSpace(name="tiny-retarget", input_size=28, in_channels=1, num_classes=10,
                       stages=(StageSpec(8, 2, 2), StageSpec(16, 2, 2)),
                       candidates=("k3e3", "k5e6", "k7e6", "zero"), feature_mix=32)


def table_of(space: SearchSpace, scale: float = 1.0, **meta) -> LatencyTable:
    """A table of `space` whose entries grow with the layer's kernel and expansion (a made-up
    device: never this machine, so nothing is timed)."""
    entries = {}
    for layer in fixed_layers(space):
        entries[layer.key] = Entry(0.05 * scale)
    for row in candidate_layers(space):
        for layer in row:
            if layer.key:
                kernel = int(layer.key.split("kernel:")[1].split("-")[0]) \
                    if "kernel:" in layer.key else 3
                expand = int(layer.key.split("expand:")[1].split("-")[0]) \
                    if "expand:" in layer.key else 1
                entries[layer.key] = Entry(scale * 0.01 * kernel * expand)
    return LatencyTable(entries, {"space": space.to_dict(), "device": "a phone",
                                  "backend": "tflite", "batch": 1, **meta})


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> dict:
    """A finished `proxyless search` of the tiny space on 600 built-in images, priced by a
    made-up table at a middle target; its folder, space file and table file."""
    root = tmp_path_factory.mktemp("retarget")
    space = tiny_space()
    space_file = root / "space.json"
    space_file.write_text(json.dumps(space.to_dict()))
    table_file = table_of(space).save(root / "phone.json")
    lo, hi = latency_model(LatencyTable.load(table_file), space).bounds()
    folder = root / "search"
    code = main(["search", "--space", str(space_file), "--data", "builtin", "--table",
                 str(table_file), "--target-ms", f"{lo + 0.5 * (hi - lo):.4f}",
                 "--warmup-epochs", "1", "--epochs", "3", "--train-limit", "600",
                 "--batch-size", "50", "--arch-every", "2", "--out", str(folder),
                 "--no-progress", "--no-tensorboard"])
    assert code == 0
    return {"folder": folder, "space": space_file, "table": table_file, "bounds": (lo, hi)}


def test_retargeting_moves_alpha_alone_and_writes_a_search_folder(tmp_path, searched,
                                                                  capsys):
    lo, hi = searched["bounds"]
    low, high = lo + 0.15 * (hi - lo), lo + 0.85 * (hi - lo)
    out = tmp_path / "targets"
    code, stdout, _ = run_cli(capsys, "retarget", searched["folder"], "--table",
                              searched["table"], "--target-ms", f"{low:.4f}", f"{high:.4f}",
                              "--out", out, "--no-progress", "--no-tensorboard")
    assert code == 0
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == sorted(f"{float(f'{t:.4f}'):g}ms" for t in (low, high))
    summaries = {}
    for name in names:
        folder = out / name
        for file in ("arch.json", "summary.json", "probs.png", "arch.png", "checkpoint.pt",
                     "metrics.jsonl", "config.json"):
            assert (folder / file).stat().st_size > 0, file
        summary = SearchSummary.read(folder / "summary.json")
        assert summary.retargeted_from == str(searched["folder"])
        assert summary.alpha_start == "final" and summary.predicted_ms is not None
        summaries[name] = summary
        records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        # the search's 3 epochs had 2 with α steps: as many here, each of 12 / 2 steps
        assert [r["phase"] for r in records] == ["retarget", "retarget"]
        assert all(r["arch_steps"] == 6 and "train_loss" not in r for r in records)
    low_s, high_s = (summaries[n] for n in sorted(names, key=lambda n: float(n[:-2])))
    assert low_s.predicted_ms < high_s.predicted_ms
    # the supernet's weights are the search's; α is not
    before = finished_search(searched["folder"]).supernet
    after = finished_search(out / names[0]).supernet
    for (key, a), b in zip(before.state_dict().items(), after.state_dict().values(),
                           strict=True):
        if "alpha" not in key:
            assert torch.equal(a, b), key
    assert any(not torch.equal(a, b) for a, b in zip(before.arch_parameters(),
                                                     after.arch_parameters(), strict=True))
    compare = (out / "compare.md").read_text()
    assert all(name in compare for name in names) and (out / "compare.png").stat().st_size
    assert "re-targeted:" in stdout

    # --resume: finished targets are read back, not redone
    stamp = (out / names[0] / "summary.json").stat().st_mtime_ns
    code, _, err = run_cli(capsys, "retarget", searched["folder"], "--table",
                           searched["table"], "--target-ms", f"{low:.4f}", f"{high:.4f}",
                           "--out", out, "--resume", "--no-progress", "--no-tensorboard")
    assert code == 0 and "re-targeted before" in err
    assert (out / names[0] / "summary.json").stat().st_mtime_ns == stamp


def test_uniform_alpha_start_and_another_table(tmp_path, searched):
    """--from uniform starts every block at p = 1/N; a slower device's table is another cost
    model of the same space, and the run re-targets to it."""
    found = finished_search(searched["folder"])
    space = found.space
    table = table_of(space, scale=3.0, device="a slower phone")
    lo, hi = latency_model(table, space).bounds()
    config = retarget_config(found.config, target=lo + 0.5 * (hi - lo), epochs=2,
                             tensorboard=False)
    from proxyless.data import load_data

    data = load_data("builtin", val_size=found.config.val_size, seed=found.config.seed,
                     notify=None)
    summary = retarget_job(found, data, config, tmp_path / "slow", table, start="uniform",
                           progress=False, log=lambda m: None)
    assert summary.alpha_start == "uniform"
    first = torch.load(tmp_path / "slow" / "checkpoint.pt", weights_only=True)
    history = first["probs_history"]
    assert all(abs(p - 1 / len(block)) < 1e-6 for block in history[0] for p in block)
    assert summary.predicted_ms <= config.target * 1.0001


def test_retarget_refuses_bad_inputs_in_one_line(tmp_path, searched, capsys):
    other = SearchSpace(name="other", input_size=28, in_channels=1, num_classes=10,
                        stages=(StageSpec(8, 1, 2),), candidates=("k3e3", "zero"),
                        feature_mix=32)
    other_table = table_of(other).save(tmp_path / "other.json")
    cases = [
        ((searched["folder"], "--table", other_table, "--target-ms", "1", "--out",
          tmp_path / "a"), "--table"),
        ((tmp_path / "nothing", "--target-ms", "1", "--out", tmp_path / "b"),
         "no such search folder"),
        ((searched["folder"], "--table", searched["table"], searched["table"],
          "--target-ms", "1", "2", "3", "--out", tmp_path / "c"), "2 tables and 3 targets"),
    ]
    cases.append(((searched["folder"], "--target-ms", "1", "--out", searched["folder"]),
                  "the search's own folder"))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "checkpoint.pt").write_bytes(b"")
    cases.append(((unfinished, "--target-ms", "1", "--out", tmp_path / "d"),
                  "no finished search"))
    for argv, needle in cases:
        code, _, err = run_cli(capsys, "retarget", *argv, "--no-progress")
        assert code != 0
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0], err
        assert "Traceback" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_run_from_search_retargets_then_retrains(tmp_path, searched, capsys):
    lo, hi = searched["bounds"]
    target = lo + 0.3 * (hi - lo)
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "run", "--space", searched["space"], "--data", "builtin",
                              "--from-search", searched["folder"], "--table",
                              searched["table"], "--target-ms", f"{target:.4f}",
                              "--retrain-epochs", "1", "--batch-size", "50", "--out", out,
                              "--no-progress", "--no-tensorboard")
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["retargeted_from"] == str(searched["folder"])
    summary = SearchSummary.read(out / "search" / "summary.json")
    assert summary.retargeted_from == str(searched["folder"])
    assert "Re-targeted (`--from-search`)" in (out / "report.md").read_text()
    assert (out / "retrain" / "model.pt").exists()


def test_run_from_search_refuses_another_space_or_split(tmp_path, searched, capsys):
    code, _, err = run_cli(capsys, "run", "--from-search", searched["folder"], "--out",
                           tmp_path / "r", "--no-progress")
    assert code != 0 and "not --space 'fashion'" in err and "Traceback" not in err
    # another seed holds out other images: α would step on what the weights trained on
    code, _, err = run_cli(capsys, "run", "--space", searched["space"], "--from-search",
                           searched["folder"], "--seed", "3", "--out", tmp_path / "r",
                           "--no-progress")
    assert code != 0 and "--seed 0" in err and len(err.strip().splitlines()) == 1
    assert not Path(tmp_path / "r").exists()


def test_a_finished_search_folder_is_found_in_a_run_folder(tmp_path, searched):
    run = tmp_path / "run"
    (run / "search").mkdir(parents=True)
    for name in ("checkpoint.pt", "summary.json"):
        (run / "search" / name).write_bytes((searched["folder"] / name).read_bytes())
    assert finished_search(run).folder == run / "search"
    with pytest.raises(ProxylessError, match="keeps the search's batch_size"):
        retarget_config(finished_search(run).config, batch_size=10)


@pytest.mark.parametrize("strategy", ["gradient", "reinforce"])
def test_a_resumed_retargeting_ends_as_an_uninterrupted_one(tmp_path, searched, monkeypatch,
                                                            strategy):
    """Killed after its second epoch's α steps, before that epoch's checkpoint: --resume
    gives the same α and network (the strategy's Adam, multipliers or baseline restored)."""
    import proxyless.search.loop as loop
    from proxyless.data import load_data
    from proxyless.search.retarget import retarget

    found = finished_search(searched["folder"])
    table = LatencyTable.load(searched["table"])
    model = latency_model(table, found.space)
    lo, hi = model.bounds()
    config = retarget_config(found.config, target=lo + 0.3 * (hi - lo), epochs=2,
                             strategy=strategy, reinforce_samples=3, tensorboard=False)
    data = load_data("builtin", val_size=found.config.val_size, seed=found.config.seed,
                     notify=None)
    full = retarget(found, data, model, config, tmp_path / "a", progress=False,
                    log=lambda m: None)
    real, calls = loop.evaluate_argmax, []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_argmax", interrupt)
    with pytest.raises(KeyboardInterrupt):
        retarget(found, data, model, config, tmp_path / "b", progress=False,
                 log=lambda m: None)
    monkeypatch.setattr(loop, "evaluate_argmax", real)
    resumed = retarget(found, data, model, config, tmp_path / "b", resume=True,
                       progress=False, log=lambda m: None)
    assert resumed.arch == full.arch
    for a, b in zip(full.supernet.arch_parameters(), resumed.supernet.arch_parameters(),
                    strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ProxylessError, match="other settings"):
        retarget(found, data, model, config, tmp_path / "b", start="uniform", resume=True,
                 progress=False, log=lambda m: None)
