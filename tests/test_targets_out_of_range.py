"""Targets no network of the space can meet, below the fastest or above the slowest (1e308),
for latency and for multiply-adds: the search runs to its end and hands over a network, with
no traceback after the work (the derivation once overflowed on 1e308)."""

from __future__ import annotations

import json

import pytest

from proxyless.cli import main
from proxyless.latency.cost import flops_model, latency_model
from proxyless.latency.table import LatencyTable
from proxyless.model.space import load_space

SEARCH = ["--data", "builtin", "--train-limit", "300", "--val-size", "100", "--epochs", "2",
          "--warmup-epochs", "0", "--batch-size", "50", "--arch-every", "2", "--threads", "1",
          "--no-progress", "--no-tensorboard"]


@pytest.fixture(scope="module")
def table(files, tmp_path_factory):
    path = tmp_path_factory.mktemp("targets") / "table.json"
    assert main(["profile", "--space", str(files / "space.yaml"), "--out", str(path),
                 "--min-time", "0.01", "--repeats", "3", "--calibrate", "0",
                 "--no-progress"]) == 0
    return path


@pytest.mark.parametrize("metric, target", [("ms", "1e308"), ("ms", "1e-9"),
                                            ("mflops", "1e308"), ("mflops", "1e-9")])
def test_an_unreachable_target_still_ends_with_a_network(files, table, tmp_path, capsys,
                                                         metric, target):
    out = tmp_path / "s"
    given = (["--table", str(table), "--target-ms", target] if metric == "ms"
             else ["--target-mflops", target])
    assert main(["search", "--space", str(files / "space.yaml"), *given, *SEARCH,
                 "--out", str(out)]) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    space = load_space(files / "space.yaml")
    model = (latency_model(LatencyTable.load(table), space) if metric == "ms"
             else flops_model(space))
    lo, hi = model.bounds()
    value = summary["predicted_ms"] if metric == "ms" else summary["macs"] / 1e6
    assert lo - 1e-6 <= value <= hi + 1e-6


def test_non_finite_targets_are_refused_up_front(capsys):
    for target in ("inf", "nan", "-1", "0"):
        with pytest.raises(SystemExit) as stop:
            main(["search", "--target-ms", target, "--out", "never"])
        assert stop.value.code == 2
        assert "--target-ms: must be a finite number > 0" in capsys.readouterr().err
