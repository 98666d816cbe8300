"""TensorBoard event files: step curves averaged and buffered, epoch figures, p as a picture,
the settings as hparams; a resumed run continues its curves without duplicates."""

import pytest
import torch

from conftest import read_events
from proxyless import Architecture, load_space
from proxyless.engine.tensorboard_log import RunBoard
from proxyless.latency.cost import flops_model
from proxyless.search import SearchConfig, search
from proxyless.training.trainer import TrainConfig, train_network
from test_search import tiny_space


def test_step_values_are_averaged_per_interval_and_read_in_batches(tmp_path):
    board = RunBoard(tmp_path, steps_per_epoch=4, every=3, read_every=5)
    board.open(start_epoch=0, resumed=False, settings={"lr": 0.1, "shape": [1, 2], "x": None})
    for step in range(1, 9):
        board.add(step, {"loss": torch.tensor(float(step)), "lr": 0.5})
        if step % 2 == 0:
            board.add(step, {"arch": float(step)})  # a second call at the same step joins it
        if step == 4:  # steps 1-3 ended an interval, but nothing is read before step 5
            assert [tag for _, tag, _ in board.pending] == ["loss", "lr", "arch"]
        if step == 5:
            assert board.pending == []
    board.epoch(2, {"epoch": 2, "val_top1": 50.0, "arch": "k3e3", "flag": True})
    board.close()
    events = read_events(tmp_path)
    assert events["scalars"]["loss"] == [(3, 2.0), (6, 5.0)]  # step 7-8: interval unfinished
    assert events["scalars"]["lr"] == [(3, 0.5), (6, 0.5)]
    assert events["scalars"]["arch"] == [(3, 2.0), (6, 5.0)]
    assert events["scalars"]["epoch/val_top1"] == [(8, 50.0)]  # at the epoch's last step
    assert set(events["scalars"]) == {"loss", "lr", "arch", "epoch/val_top1"}
    assert events["hparams"] == {"lr": 0.1, "shape": "[1, 2]", "x": "None"}


def test_an_interval_ending_with_the_epoch_is_written_with_it(tmp_path):
    board = RunBoard(tmp_path, steps_per_epoch=4, every=2, read_every=25)
    board.open(start_epoch=0, resumed=False)
    for step in range(1, 5):
        board.add(step, {"loss": torch.tensor(1.0)})
    board.epoch(1, {"train_loss": 1.0})
    assert board.pending == [] and board.interval_end is None
    board.close()
    assert [s for s, _ in read_events(tmp_path)["scalars"]["loss"]] == [2, 4]


def test_a_search_logs_curves_architecture_steps_probs_and_settings(tmp_path, builtin_subset):
    tiny_data = builtin_subset(800, 200)
    space = tiny_space()
    cost = flops_model(space)
    config = SearchConfig(warmup_epochs=1, epochs=2, batch_size=50, arch_every=2,
                          eval_limit=200, seed=1, metric="flops",
                          target=cost.bounds()[0] * 1.3, log_every=5)
    search(space, tiny_data, cost, config, tmp_path, progress=False)
    events = read_events(tmp_path)
    scalars = events["scalars"]
    steps = len(tiny_data.train) // 50  # 16 per epoch, 48 in all
    for tag in ("train/loss", "train/top1", "train/lr"):
        assert [s for s, _ in scalars[tag]] == list(range(5, 3 * steps + 1, 5))
    # α steps only in the last epoch (none in the warm-up or the first search epoch)
    for tag in ("arch/loss", "arch/ce", "arch/multiplier", "arch/entropy",
                "arch/expected_flops", "arch/argmax_flops"):
        assert [s for s, _ in scalars[tag]] == [35, 40, 45], tag
    for tag in ("epoch/val_top1", "epoch/train_loss", "epoch/entropy", "epoch/argmax_flops",
                "epoch/expected_flops"):
        assert [s for s, _ in scalars[tag]] == [steps, 2 * steps, 3 * steps], tag
    # p's picture after the last epoch, and after others as the time budget allows (see
    # test_pictures_are_kept_to_a_share_of_the_time)
    assert events["images"]["probs"][-1] == 3 * steps
    assert set(events["images"]["probs"]) <= {steps, 2 * steps, 3 * steps}
    assert all(0 <= v <= 100 for _, v in scalars["train/top1"])
    assert events["hparams"]["search.arch_every"] == 2
    assert events["hparams"]["space.name"] == "tiny-fashion"
    assert events["metrics"] == ["epoch/val_top1", "epoch/argmax_flops"]


@pytest.mark.parametrize("tensorboard", [True, False])
def test_train_writes_events_unless_told_not_to(tmp_path, builtin_subset, tensorboard):
    arch = Architecture.uniform(load_space("fashion"), "k3e3")
    config = TrainConfig(epochs=1, batch_size=64, tensorboard=tensorboard, log_every=2)
    train_network(arch, builtin_subset(256), config, tmp_path, progress=False)
    assert bool(list(tmp_path.glob("events.out.tfevents.*"))) == tensorboard
    if tensorboard:
        scalars = read_events(tmp_path)["scalars"]
        assert [s for s, _ in scalars["train/loss"]] == [2, 4]
        assert [s for s, _ in scalars["epoch/test_top1"]] == [4]
        assert [s for s, _ in scalars["train/lr"]][-1] == 4


@pytest.mark.parametrize("command", ["search", "train", "run"])
def test_the_command_line_switches_tensorboard_off_and_sets_the_interval(command):
    from proxyless.cli import build_parser
    from proxyless.cli.search import search_config_from

    args = build_parser().parse_args([command, *(["a.json"] if command == "train" else []),
                                      "--out", "x", "--no-tensorboard", "--log-every", "7"])
    assert not args.tensorboard and args.log_every == 7
    if command != "train":
        config = search_config_from(args)
        assert (config.tensorboard, config.log_every) == (False, 7)


def test_pictures_are_kept_to_a_share_of_the_time(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    drawn = []

    def draw():
        drawn.append(1)
        return Figure(figsize=(1, 1))

    board = RunBoard(tmp_path, steps_per_epoch=1)
    board.open(start_epoch=0, resumed=False)
    board.picture_share = 0.0  # no time for pictures: only the last epoch's
    for epoch in range(1, 6):
        board.figure("p", draw, epoch, last=epoch == 5)
    board.picture_share = 1e9  # any time at all
    for epoch in range(6, 9):
        board.figure("p", draw, epoch, last=False)
    board.close()
    assert len(drawn) == 4
    assert read_events(tmp_path)["images"]["p"] == [5, 6, 7, 8]
