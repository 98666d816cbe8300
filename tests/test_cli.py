"""The `proxyless` command: inspect, train, and clear errors instead of tracebacks."""

import json
import subprocess
import sys

import pytest

from proxyless.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_reference_gpu_json(capsys, reference_dir):
    code, out, _ = run_cli(capsys, "inspect", str(reference_dir / "proxyless_gpu.config"),
                           "--json")
    info = json.loads(out)
    assert code == 0
    assert info["params"] / 1e6 == pytest.approx(7.12, rel=0.01)
    assert info["macs"] / 1e6 == pytest.approx(465, rel=0.01)
    assert info["input_size"] == 224 and len(info["blocks"]) == 21


def test_inspect_our_file_and_a_space(capsys, tmp_path):
    from proxyless import Architecture, load_space

    path = Architecture.uniform(load_space("fashion"), "k5e6").save(tmp_path / "a.yaml")
    code, out, _ = run_cli(capsys, "inspect", str(path))
    assert code == 0 and "k5e6" in out and "params" in out
    code, out, _ = run_cli(capsys, "inspect", "imagenet", "--json")
    info = json.loads(out)
    assert info["searchable_blocks"] == 21
    assert info["supernet_params"] / 1e6 == pytest.approx(16.0, rel=0.01)


@pytest.mark.parametrize("argv, message", [
    (["inspect", "no/such/file.json"], "no such file"),
    (["train", "no/such/arch.json", "--out", "x"], "does not exist"),
])
def test_errors_are_one_line(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert err.startswith("proxyless: error:")


def test_bad_data_dir_is_a_clear_error(capsys, tmp_path):
    from proxyless import Architecture, load_space

    arch = Architecture.uniform(load_space("fashion"), "k3e3").save(tmp_path / "a.json")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "train", str(arch), "--out", str(tmp_path / "run"),
                           "--data", "fashion-mnist", "--data-dir", str(tmp_path / "empty"))
    assert code == 2 and str(tmp_path / "empty") in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_console_script_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"space": "fashion", "blocks": ["k3e6", "k9e9x"]}')
    proc = subprocess.run([sys.executable, "-m", "proxyless.cli", "inspect", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "k9e9x" in proc.stderr and "Traceback" not in proc.stderr


def test_train_command_end_to_end(capsys, tmp_path):
    from proxyless import Architecture, load_space

    arch = Architecture.uniform(load_space("fashion"), "k3e3").save(tmp_path / "a.json")
    code, out, _ = run_cli(capsys, "train", str(arch), "--data", "builtin", "--epochs", "1",
                           "--batch-size", "64", "--out", str(tmp_path / "run"),
                           "--no-progress")
    assert code == 0 and "test top-1" in out
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["test_top1"] > 30.0
    code, _, err = run_cli(capsys, "train", str(arch), "--data", "builtin", "--epochs", "1",
                           "--out", str(tmp_path / "run"))
    assert code == 2 and "--resume" in err


def test_run_budget_fills_what_was_not_given():
    from proxyless.cli import build_parser
    from proxyless.cli.run import apply_budget, budget_epochs
    from proxyless.pipeline.run import BUDGETS

    args = build_parser().parse_args(["run", "--budget", "standard", "--epochs", "5"])
    apply_budget(args)
    standard = BUDGETS["standard"]
    assert args.epochs == 5  # given: kept
    assert (args.arch_every, args.train_limit) == (standard.arch_every, standard.train_limit)
    assert args.warmup_epochs is None  # scaled to the data once it is read
    assert budget_epochs(args, 54000, 60000) == (standard.warmup_epochs, 5, 18)
    args = build_parser().parse_args(["run"])
    apply_budget(args)
    assert args.budget == "quick" and args.epochs is None
    assert args.batch_size == 128 and args.lr == 0.05  # no budget sets them: the defaults
    quick = BUDGETS["quick"]  # retraining sees the same images whatever the data set's size
    assert quick.retrain_epochs(60000) == 6 and quick.retrain_epochs(6000) == 60
    # the retraining's epochs are of its own set: the search's split and its hold-out
    assert budget_epochs(args, 54000, 60000) == (quick.warmup_epochs, quick.epochs, 6)
    assert budget_epochs(args, 5400, 6000) == (7, 11, 60)  # a small set: as many images seen


def test_a_budget_is_laid_over_the_options_by_the_library():
    """`fill_from_budget`, without the command line: what is given wins, the budget fills
    what is not, the defaults what the budget leaves; the paper's batch splits over ranks."""
    from proxyless.errors import ProxylessError
    from proxyless.pipeline.budgets import fill_from_budget

    options = {"epochs": 5, "warmup_epochs": None, "arch_every": None, "train_limit": 7,
               "batch_size": None, "lr": None}
    fill_from_budget(options, "standard", {"batch_size": 128, "lr": 0.05, "arch_every": 5})
    assert options == {"epochs": 5, "warmup_epochs": None, "arch_every": 2, "train_limit": 7,
                       "batch_size": 128, "lr": 0.05}
    paper = {"batch_size": None}
    fill_from_budget(paper, "paper", {}, ranks=8)
    assert paper["batch_size"] == 32
    with pytest.raises(ProxylessError, match="does not split over 3 ranks"):
        fill_from_budget({"batch_size": None}, "paper", {}, ranks=3)


def test_the_paper_budget_is_the_reference_codes_imagenet_protocol(monkeypatch):
    from proxyless.cli import build_parser
    from proxyless.cli.run import apply_budget
    from proxyless.cli.search import search_config_from
    from proxyless.engine.optimizer import cosine_schedule
    from proxyless.pipeline.run import BUDGETS

    args = build_parser().parse_args(["run", "--budget", "paper", "--arch-lr", "0.002"])
    apply_budget(args)
    config = search_config_from(args)
    expected = dict(warmup_epochs=40, epochs=120, batch_size=256, lr=0.025, warmup_lr=0.05,
                    warmup_parent=0.0, arch_every=5, arch_lr=0.002,  # given: wins
                    arch_beta1=0.0, arch_beta2=0.999, estimator="recompute", decide=0.0,
                    val_size=50000, label_smoothing=0.1, weight_decay=4e-5, train_limit=None,
                    constraint="soft")  # the paper's loss alone
    assert {k: getattr(config, k) for k in expected} == expected
    paper = BUDGETS["paper"]  # epochs as they are, whatever the data's size
    assert paper.search_epochs(1_231_167) == paper.search_epochs(5400) == (40, 120)
    assert paper.retrain_epochs(1_231_167) == 300
    # the warm-up's cosine starts at twice the search's rate: 0.05, then 0.025
    schedule = cosine_schedule(120 * 10, restart_at=40 * 10, first_scale=0.05 / 0.025)
    assert schedule(0) == 2.0 and schedule(400) == 1.0
    # under torchrun the authors' batch of 256 is split over the ranks
    monkeypatch.setenv("WORLD_SIZE", "8")
    args = build_parser().parse_args(["run", "--budget", "paper"])
    apply_budget(args)
    assert args.batch_size == 32
    args = build_parser().parse_args(["run", "--budget", "paper", "--batch-size", "64"])
    apply_budget(args)
    assert args.batch_size == 64  # given: per GPU
    monkeypatch.delenv("WORLD_SIZE")
    # other budgets leave the settings at SearchConfig's defaults
    args = build_parser().parse_args(["run", "--budget", "quick"])
    apply_budget(args)
    config = search_config_from(args)
    assert (config.batch_size, config.lr, config.warmup_lr, config.estimator,
            config.constraint, config.target_floor) == (128, 0.05, None, "two", "dual", 0.95)


def test_budgets_size_the_search_in_images_too():
    from proxyless.pipeline.run import BUDGETS

    quick, standard = BUDGETS["quick"], BUDGETS["standard"]
    # quick searches 20,000-image epochs: full data gets its epochs as they are
    assert quick.search_epochs(54000) == (quick.warmup_epochs, quick.epochs)
    # the built-in 5,400 images: ~3.7x the epochs, so as many weight and α steps
    assert quick.search_epochs(5400) == (7, 11)
    assert standard.search_epochs(54000) == (standard.warmup_epochs, standard.epochs)
    assert standard.search_epochs(5400) == (30, 80)


def test_search_without_a_table_prices_this_device_in_onnx_runtime(capsys, tmp_path,
                                                                   monkeypatch):
    """A latency target and no --table: this device's ONNX Runtime table (profiled into the
    cache), named in the summary beside the network measured in every runtime."""
    from conftest import small_space

    monkeypatch.setenv("PROXYLESS_CACHE", str(tmp_path / "cache"))
    space = tmp_path / "space.json"
    space.write_text(json.dumps(small_space().to_dict()))
    code, out, err = run_cli(capsys, "search", "--space", str(space), "--data", "builtin",
                             "--val-size", "100", "--train-limit", "200", "--batch-size", "25",
                             "--warmup-epochs", "0", "--epochs", "2", "--target-ms", "0.1",
                             "--profile-min-time", "0.01", "--out", str(tmp_path / "s"),
                             "--no-progress")
    assert code == 0, err
    assert "(ONNX Runtime, batch 1)" in out and "in each runtime, measured now: torch" in out
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["priced"] == {**summary["priced"], "runtime": "ONNX Runtime",
                                 "backend": "onnxruntime", "batch": 1, "threads": 1}
    assert sorted(summary["runtimes_ms"]) == ["onnxruntime", "torch"]
    assert all(ms > 0 for ms in summary["runtimes_ms"].values())
    assert list((tmp_path / "cache" / "tables").glob("small-*.json"))
