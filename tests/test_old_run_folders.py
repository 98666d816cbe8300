"""Run folders written by earlier versions still resume and load: one name per setting since
2026-12-07 (`reward`, `reward_w`, `measure_latency`, `tensorboard` in every file), the names
before read once (`SearchConfig.RENAMED`, `config_file.OLD_SWITCHES`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from proxyless.cli import main

OLD_SEARCH = Path(__file__).parent / "data" / "search-9a5886a"  # its README: how it was made


def _old_search(tmp_path: Path, files: Path) -> Path:
    """The old folder as `run`, beside the space and data it was started with."""
    shutil.copy(files / "space.yaml", tmp_path / "space.yaml")
    shutil.copytree(files / "data", tmp_path / "data")
    shutil.copytree(OLD_SEARCH, tmp_path / "run")
    return tmp_path / "run"


def test_a_search_folder_of_the_old_names_resumes(tmp_path, files, monkeypatch):
    run = _old_search(tmp_path, files)
    saved = json.loads((run / "config.json").read_text())["search"]
    assert saved["reinforce_reward"] == "reference"  # written under the old names
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--space", "space.yaml", "--data", "data", "--val-size", "100",
                 "--strategy", "reinforce", "--reward", "reference", "--reward-w", "-0.1",
                 "--target-mflops", "0.12", "--warmup-epochs", "1", "--epochs", "3",
                 "--arch-every", "1", "--batch-size", "50", "--seed", "5", "--threads", "1",
                 "--no-progress", "--no-tensorboard", "--out", "run", "--resume"])
    assert code == 0
    assert (run / "arch.json").is_file()
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text()
              .splitlines()]
    assert epochs == sorted(set(epochs)) and len(epochs) == 4  # went on, nothing redone


def test_a_changed_setting_under_its_old_name_is_still_refused(tmp_path, files, monkeypatch,
                                                               capsys):
    _old_search(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--space", "space.yaml", "--data", "data", "--val-size", "100",
                 "--strategy", "reinforce", "--reward", "mnas", "--reward-w", "-0.1",
                 "--target-mflops", "0.12", "--warmup-epochs", "1", "--epochs", "3",
                 "--arch-every", "1", "--batch-size", "50", "--seed", "5", "--threads", "1",
                 "--no-progress", "--out", "run", "--resume"])
    assert code == 2
    assert "reward: 'reference' -> 'mnas'" in capsys.readouterr().err


def test_an_old_config_file_loads_under_the_new_names(tmp_path, files, monkeypatch, capsys):
    run = _old_search(tmp_path, files)
    assert "no_tensorboard: true" in (run / "config.yaml").read_text()
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--config", "run/config.yaml", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "  tensorboard: false\n" in text and "no_tensorboard" not in text
    assert "  reward: reference\n" in text and "  reward_w: -0.1\n" in text
