"""Options made from the config classes' declared settings (`cli/settings.py`) and the values
each declaration allows (`config_io.declared_problem`)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from proxyless.cli import build_parser
from proxyless.cli.search import search_config_from
from proxyless.cli.settings import add_settings, option_dest, settings_from_args
from proxyless.config_io import declared_problem, declared_range, setting
from proxyless.search.config import SearchConfig
from proxyless.training.trainer import TrainConfig


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


@pytest.mark.parametrize(("command", "classes"), [
    ("search", (SearchConfig,)), ("train", (TrainConfig,)), ("run", (SearchConfig,)),
])
def test_every_setting_with_an_option_is_on_the_command_line(command, classes):
    dests = {a.dest for a in _subparser(command)._actions}
    for cls in classes:
        missing = [f.name for f in dataclasses.fields(cls)
                   if option_dest(f) is not None and option_dest(f) not in dests]
        assert not missing, f"{command}: settings without their option: {missing}"


def test_options_check_the_declared_values(capsys):
    parser = build_parser()
    for argv, message in (
            (["search", "--arch-every", "0"], "--arch-every: must be a whole number >= 1"),
            (["search", "--reinforce-samples", "1"],
             "--reinforce-samples: must be a whole number >= 2"),
            (["train", "x.json", "--lr", "0"], "--lr: must be a finite number > 0"),
            (["search", "--loss", "nope"], "--loss: invalid choice"),
            (["run", "--precision", "fp8"], "--precision: invalid choice")):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert message in capsys.readouterr().err


def test_the_command_line_reads_back_into_the_config():
    parser = build_parser()
    args = parser.parse_args(["search", "--reward", "reference", "--reward-w", "-0.1",
                              "--measure-latency", "--strategy", "reinforce",
                              "--no-tensorboard", "--arch-every", "3", "--seed", "7",
                              "--target-ms", "0.2"])
    config = search_config_from(args)
    assert (config.reward, config.reward_w, config.measure_latency) == \
        ("reference", -0.1, True)
    assert (config.strategy, config.arch_every, config.seed, config.tensorboard) == \
        ("reinforce", 3, 7, False)
    assert (config.metric, config.target) == ("latency", 0.2)
    # what the command line leaves alone is the declared default
    assert config.lr == SearchConfig().lr and config.warmup_lr is None

    args = parser.parse_args(["train", "x.json", "--no-augment", "--dropout", "0.3"])
    train = TrainConfig(**settings_from_args(TrainConfig, args))
    assert (train.augment, train.dropout, train.epochs) == (False, 0.3, TrainConfig().epochs)


def test_run_leaves_what_the_budget_decides_unset():
    args = build_parser().parse_args(["run"])
    assert args.lr is None and args.epochs is None and args.estimator is None
    help_text = _subparser("run").format_help()
    assert "or from --budget" in help_text


@dataclasses.dataclass
class _Example:
    count: int = setting(3, "how many", at_least=1)
    share: float = setting(0.5, "a share", at_least=0, below=1)
    mode: str = setting("a", "which", choices=("a", "b"))
    limit: int | None = setting(None, "at most this many", at_least=1)
    switch: bool = setting(True, "the thing")


def test_declared_problem_names_the_field_and_the_range():
    assert declared_problem(_Example()) is None
    assert declared_problem(_Example(count=0)) == "count must be >= 1, got 0"
    assert declared_problem(_Example(share=1.0)) == "share must be >= 0, < 1, got 1.0"
    assert declared_problem(_Example(mode="c")) == "mode must be one of a, b, got 'c'"
    assert declared_problem(_Example(limit=0)) == "limit must be >= 1, got 0"
    assert [declared_range(f) for f in dataclasses.fields(_Example)] == \
        [">= 1", ">= 0, < 1", "one of a, b", ">= 1", None]
    with pytest.raises(TypeError, match="unknown keyword"):
        setting(1, "x", at_leats=2)


def test_generated_options_of_a_class():
    parser = argparse.ArgumentParser()
    add_settings(parser, _Example, ("count", "share", "mode", "limit", "switch"),
                 defaults={"count": None}, notes={"count": " (default: decided later)"})
    args = parser.parse_args(["--share", "0.25", "--mode", "b", "--no-switch"])
    assert vars(args) == {"count": None, "share": 0.25, "mode": "b", "limit": None,
                          "switch": False}
    # a None the class does not default to is left out
    assert settings_from_args(_Example, args) == {"share": 0.25, "mode": "b", "limit": None,
                                                  "switch": False}
    help_text = parser.format_help()
    assert "how many (default: decided later)" in help_text
    assert "--switch, --no-switch" in help_text and "the thing (default: on)" in help_text
    assert "a share (default 0.5)" in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["--count", "0"])


def test_profile_settings_on_three_commands():
    """`profile`'s options, `search`/`run`'s `--profile-*` and the library's ProfileSetting
    are one declaration; the old `--calibrate` still works."""
    from proxyless.cli.search import profile_setting
    from proxyless.latency.profile import ProfileSetting

    parser = build_parser()
    for option in ("--calibrate", "--calibration-networks"):
        args = parser.parse_args(["profile", "--space", "fashion", option, "3",
                                  "--min-time", "0.5"])
        setting = ProfileSetting(**settings_from_args(ProfileSetting, args))
        assert (setting.calibration_networks, setting.min_time) == (3, 0.5)
    default = ProfileSetting(**settings_from_args(
        ProfileSetting, parser.parse_args(["profile", "--space", "fashion"])))
    assert default.min_time == 20.0  # a standalone profile times longer than a run's
    assert default.calibration_networks == ProfileSetting().calibration_networks
    args = parser.parse_args(["run", "--profile-backend", "torch", "--profile-batch", "64",
                              "--profile-threads", "2"])
    assert profile_setting(args) == ProfileSetting(backend="torch", batch=64, threads=2)
    assert profile_setting(parser.parse_args(["search"])) == \
        ProfileSetting(backend="onnxruntime", batch=1)


def test_progress_bars_only_on_a_terminal(monkeypatch):
    """A log file (a cluster job, `make run > log`) gets the epoch lines, not thousands of
    bar redraws."""
    import sys

    from proxyless.cli.options import progress_bars

    for tty, hidden, shown in ((True, False, True), (False, False, False),
                               (True, True, False)):
        monkeypatch.setattr(sys.stderr, "isatty", lambda tty=tty: tty)
        assert progress_bars(argparse.Namespace(no_progress=hidden)) is shown
