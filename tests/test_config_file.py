"""Runs as config files: every search, train and run folder holds its resolved options as
config.yaml, and `--config FILE` takes it back (options on the command line win)."""

import json

import pytest
import yaml

from proxyless.cli import main
from proxyless.files import write_mapping_atomic
from proxyless.model.space import SearchSpace, StageSpec, load_space


def tiny_space(tmp_path):
    space = SearchSpace(name="tiny-config", input_size=28, in_channels=1, num_classes=10,
                        stem=load_space("fashion").stem,
                        stages=(StageSpec(16, 1, 2), StageSpec(24, 1, 2)),
                        candidates=("k3e3", "k5e6", "zero"), feature_mix=32)
    return str(write_mapping_atomic(tmp_path / "space.json", space.to_dict()))


def test_run_again_from_its_config_gives_the_same_architecture(tmp_path, capsys):
    space = tiny_space(tmp_path)
    first = tmp_path / "a"
    assert main(["run", "--space", space, "--data", "builtin", "--train-limit", "600",
                 "--val-size", "200", "--epochs", "2", "--warmup-epochs", "1",
                 "--batch-size", "50", "--arch-every", "1", "--retrain-epochs", "1",
                 "--profile-min-time", "0.01", "--seed", "3", "--out", str(first),
                 "--no-progress"]) == 0
    saved = yaml.safe_load((first / "config.yaml").read_text())
    assert saved["command"] == "run"
    options = saved["options"]
    # resolved: what the budget and the device filled in is written down too
    assert options["seed"] == 3 and options["train_limit"] == 600
    assert options["profile_backend"] == "onnxruntime" and options["profile_batch"] == 1
    assert options["constraint"] == "dual" and options["lr"] == 0.05  # the default, named
    assert options["retrain_epochs"] == 1 and options["epochs"] == 2
    assert "out" not in options and "resume" not in options
    again = tmp_path / "b"
    assert main(["run", "--config", str(first / "config.yaml"), "--out", str(again),
                 "--no-progress"]) == 0
    capsys.readouterr()
    a, b = (json.loads((d / "results.json").read_text()) for d in (first, again))
    assert a["arch"] == b["arch"] and a["target_ms"] == b["target_ms"]
    assert yaml.safe_load((again / "config.yaml").read_text()) == saved


def test_options_on_the_command_line_win_over_the_file(tmp_path, capsys):
    from proxyless.cli import build_parser
    from proxyless.cli.config_file import apply_config

    config = tmp_path / "c.yaml"
    config.write_text("command: search\noptions:\n  epochs: 7\n  lr: 0.2\n  sandwich: true\n"
                      "  crop_scale: [0.3, 1]\n  threads: null\n")
    argv = ["search", "--config", str(config), "--out", "x", "--lr", "0.01"]
    parser = build_parser()
    args = apply_config(parser, argv, parser.parse_args(argv))
    assert (args.epochs, args.lr, args.sandwich, args.crop_scale) == (7, 0.01, True, [0.3, 1.0])
    flat = tmp_path / "flat.yaml"  # a hand-written file: just the options
    flat.write_text("epochs: 5\n")
    argv = ["search", "--config", str(flat), "--out", "x"]
    assert apply_config(parser, argv, parser.parse_args(argv)).epochs == 5
    # the parser's own defaults are untouched by the probe for given options
    assert build_parser().parse_args(["search", "--out", "x"]).epochs == 4


@pytest.mark.parametrize("text, message", [
    ("options:\n  epoch: 3\n", "unknown option 'epoch' for `proxyless search` (did you mean "
                               "'epochs'?)"),
    ("options:\n  epochs: many\n", "epochs: 'many' is not valid"),
    ("options:\n  epochs: 0\n", "epochs: 0 is not valid"),
    ("options:\n  lr: -1\n", "lr: -1 is not valid"),
    ("options:\n  sandwich: 1\n", "sandwich: expected true or false"),
    ("options:\n  estimator: three\n", "estimator: 'three' is not one of two, recompute"),
    ("options:\n  crop_scale: 0.5\n", "crop_scale: expected a list"),
    ("options:\n  epochs: [1, 2]\n", "epochs: expected a single value"),
    ("command: train\noptions: {}\n", "is for `proxyless train`, not `proxyless search`"),
    ("- just a list\n", "config file"),
])
def test_bad_config_files_are_clear_errors_naming_the_key(tmp_path, capsys, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    code = main(["search", "--config", str(config), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()  # nothing made before the options are sound


def test_a_failed_command_leaves_no_folder_for_its_config_alone(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["search", "--data", "builtin", "--epochs", "2", "--batch-size", "100000",
                 "--out", str(out), "--no-progress"])
    assert code == 2 and not out.exists(), capsys.readouterr().err
