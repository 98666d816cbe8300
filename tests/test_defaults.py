"""The README's command lines with their defaults, as a new user types them: nothing given but
`--out` (and what a command cannot do without: a space to profile, a network to train). Each
starts as a real `proxyless` process, must get past option resolution and validation into
real work (layers timed, batches trained), and is then stopped with SIGTERM (exit code 75)
where the whole job would take too long for a test. And `--print-config`: every option
resolved as the command resolves it, the text `--config` reads back and the run folder's
config.yaml holds.

A default that is "None, filled later" and never filled (`make run` once crashed so on a
fresh clone while every test that gave its options passed) fails here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from proxyless import Architecture, load_space
from proxyless.cli import main
from proxyless.cli.config_file import NULL_MEANS
from proxyless.latency.table import LatencyTable
from proxyless.pipeline.budgets import BUDGETS

STOPPED_CODE = 75  # proxyless.engine.stopping.EXIT_STOPPED
TIMEOUT = 300      # seconds for a job to begin its work, on a busy machine
# an epoch's line: its work is under way (no progress bars: the output is not a terminal)
WORKED = re.compile(r"^(?:warmup|search|epoch) \d+/\d+ ", re.MULTILINE)


def proxyless_command() -> list[str]:
    """The console script users run (`proxyless`), beside this Python; `python -m
    proxyless.cli` where the package is imported from a source tree."""
    script = Path(sys.executable).with_name("proxyless")
    return [str(script)] if script.exists() else [sys.executable, "-m", "proxyless.cli"]


def stop_once(args: list[str], cwd: Path, begun: Callable[[str], bool]) -> str:
    """Start `proxyless ARGS` in `cwd`, wait until `begun(output so far)`, send SIGTERM; the
    command must stop with exit code 75 and say how to go on. Its whole output."""
    log = cwd / "proxyless.log"
    env = {**os.environ, "PROXYLESS_CACHE": str(cwd / "cache")}  # an empty cache: it profiles
    with open(log, "wb") as sink:
        proc = subprocess.Popen([*proxyless_command(), *args], stdout=sink,
                                stderr=subprocess.STDOUT, cwd=cwd, env=env)
    try:
        give_up = time.monotonic() + TIMEOUT
        while not begun(log.read_text(errors="replace")):
            text = log.read_text(errors="replace")
            assert proc.poll() is None, f"ended ({proc.returncode}) before its work began:\n" \
                                        f"{text[-3000:]}"
            assert time.monotonic() < give_up, f"no work after {TIMEOUT} s:\n{text[-3000:]}"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert code == STOPPED_CODE, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "stopped by SIGTERM" in text and "run the same command" in text, text[-1000:]
    return text


def print_config(args: list[str], capsys) -> str:
    assert main([*args, "--print-config"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["command"] == args[0]
    return out


def test_run_with_its_defaults_profiles_then_stops_on_sigterm(tmp_path, capsys):
    """`proxyless run --out DIR`: the README's main job (its first step, profiling, has timed
    layers into the cache), and config.yaml is what --print-config prints for it."""
    tables = tmp_path / "cache" / "tables"
    text = stop_once(["run", "--out", "r"], tmp_path,
                     lambda _: any(p.suffix == ".json" for p in tables.glob("fashion-*")))
    assert "latency table: profiling fashion" in text
    assert "budget quick on" in text  # the budget's epochs, resolved for the data
    assert any("stopped by SIGTERM" in line and "plus --resume" in line
               for line in text.splitlines())
    written = (tmp_path / "r" / "config.yaml").read_text()
    assert print_config(["run", "--out", "r"], capsys) == written


def test_search_with_its_defaults_trains_then_stops_on_sigterm(tmp_path, capsys):
    stop_once(["search", "--out", "s"], tmp_path, lambda text: bool(WORKED.search(text)))
    written = (tmp_path / "s" / "config.yaml").read_text()
    assert print_config(["search", "--out", "s"], capsys) == written


def test_train_with_its_defaults_trains_then_stops_on_sigterm(tmp_path, capsys, monkeypatch):
    Architecture.uniform(load_space("fashion"), "k3e6").save(tmp_path / "arch.json")
    stop_once(["train", "arch.json", "--out", "t"], tmp_path,
              lambda text: bool(WORKED.search(text)))
    written = (tmp_path / "t" / "config.yaml").read_text()
    monkeypatch.chdir(tmp_path)  # the same command line, from the same folder
    assert print_config(["train", "arch.json", "--out", "t"], capsys) == written


def test_profile_with_its_defaults_times_layers_then_stops_on_sigterm(tmp_path):
    table = tmp_path / "table.json"
    text = stop_once(["profile", "--space", "fashion", "--out", "table.json"], tmp_path,
                     lambda _: table.exists())
    assert "goes on from what table.json holds" in text
    assert LatencyTable.load(table).entries  # the layers timed so far: kept


@pytest.mark.parametrize("budget", [None, *BUDGETS])
def test_print_config_resolves_every_option_of_run(budget, tmp_path, capsys):
    """No option is left None unless None is a documented value; the printed file, given
    back as --config, prints the same; nothing is written."""
    args = ["run"] + ([] if budget is None else ["--budget", budget])
    printed = print_config([*args, "--out", str(tmp_path / "never")], capsys)
    assert not (tmp_path / "never").exists()
    options = yaml.safe_load(printed)["options"]
    unset = {key for key, value in options.items() if value is None}
    assert unset <= set(NULL_MEANS), unset - set(NULL_MEANS)
    for line in printed.splitlines():  # each null says what decides it
        assert not line.endswith(": null"), line
    chosen = BUDGETS[budget or "quick"]
    assert options["budget"] == (budget or "quick")
    assert options["batch_size"] == dict(chosen.search).get("batch_size", 128)
    assert options["arch_every"] == chosen.arch_every
    if chosen.scaled:  # scaled to the data when it is read
        assert {"warmup_epochs", "epochs", "retrain_epochs"} <= unset
    else:
        assert (options["warmup_epochs"], options["epochs"], options["retrain_epochs"]) == (
            chosen.warmup_epochs, chosen.epochs, chosen.retrain)
    saved = tmp_path / "config.yaml"
    saved.write_text(printed)
    assert print_config(["run", "--config", str(saved)], capsys) == printed


@pytest.mark.parametrize("args", [
    ["search"], ["train"], ["train", "arch.json"],
    ["run", "--batch-size", "auto"], ["search", "--batch-size", "auto"],
    ["run", "--device", "cuda"], ["run", "--space", "imagenet", "--budget", "paper"],
    ["run", "--profile-backend", "torch", "--profile-batch", "64"],
    ["search", "--table", "REFERENCE_TABLE", "--space", "imagenet", "--target-ms", "80"],
])
def test_print_config_round_trips_through_config(args, tmp_path, capsys, monkeypatch,
                                                 reference_dir):
    monkeypatch.chdir(tmp_path)
    Architecture.uniform(load_space("fashion"), "k3e6").save(tmp_path / "arch.json")
    args = [str(reference_dir / "mobile_trim.yaml") if a == "REFERENCE_TABLE" else a
            for a in args]
    printed = print_config(args, capsys)
    options = yaml.safe_load(printed)["options"]
    assert {k for k, v in options.items() if v is None} <= set(NULL_MEANS)
    (tmp_path / "c.yaml").write_text(printed)
    assert print_config([args[0], "--config", "c.yaml"], capsys) == printed
    if "--device" in args:  # a GPU's latency: PyTorch at the paper's GPU batch
        assert (options["profile_backend"], options["profile_batch"]) == ("torch", 8)


def test_print_config_refuses_what_the_command_refuses(tmp_path, capsys):
    """It validates as the command does: a bad combination is the command's own error."""
    assert main(["run", "--print-config", "--sandwich", "--fair-paths"]) == 2
    assert "choose --sandwich or --fair-paths" in capsys.readouterr().err
    assert main(["search", "--print-config", "--target-ms", "1", "--target-mflops", "2"]) == 2
    assert "not both" in capsys.readouterr().err


def test_commands_without_out_say_so(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Architecture.uniform(load_space("fashion"), "k3e6").save(tmp_path / "arch.json")
    for command in (["search"], ["train", "arch.json"]):
        assert main(command) == 2
        assert "give --out DIR" in capsys.readouterr().err
    assert not any(p.is_dir() for p in tmp_path.iterdir())  # no folder made
