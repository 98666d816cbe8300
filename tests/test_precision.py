"""Mixed precision and the GPU path's habits, checked on the CPU: every precision trains and
searches, α's gradient in bf16 matches fp32's, the weight step holds one path's memory, losses
are read in batches, α is copied to the host only when it changes."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from proxyless.engine.divergence import Diverged, StepLosses
from proxyless.engine.memory import saved_for_backward
from proxyless.engine.precision import Precision, resolve_precision
from proxyless.errors import ProxylessError
from proxyless.latency.cost import flops_model
from proxyless.model.architecture import Architecture
from proxyless.model.batchnorm import frozen_bn_statistics
from proxyless.model.network import build_network
from proxyless.model.space import SearchSpace, StageSpec, load_space
from proxyless.model.supernet import SuperNet
from proxyless.search import SearchConfig, search
from proxyless.training.trainer import TrainConfig, train_network


def tiny_space() -> SearchSpace:
    return SearchSpace(name="tiny-amp", input_size=28, in_channels=1, num_classes=10,
                       stem=load_space("fashion").stem,
                       stages=(StageSpec(16, 2, 2), StageSpec(24, 2, 2)),
                       candidates=("k3e3", "k5e6", "k7e6", "zero"), feature_mix=32)


def test_auto_is_fp32_on_the_cpu_and_bad_names_are_refused():
    assert resolve_precision("auto", torch.device("cpu")) == Precision("fp32", "cpu")
    assert resolve_precision("bf16", torch.device("cpu")).name == "bf16"
    with pytest.raises(ProxylessError, match="--precision"):
        resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(ProxylessError, match="precision"):
        SearchConfig(precision="half").validate()
    assert not Precision("bf16", "cpu").scaler().is_enabled()
    assert Precision("fp16", "cpu").scaler().is_enabled()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_every_precision_searches_and_trains_with_finite_losses(tmp_path, builtin_subset,
                                                                precision):
    space = tiny_space()
    data = builtin_subset(100, 50, test=50)  # fp16 convolutions are slow on the CPU
    cost = flops_model(space)
    lo, hi = cost.bounds()
    config = SearchConfig(warmup_epochs=1, epochs=2, batch_size=25, arch_every=2, seed=0,
                          eval_limit=50, metric="flops", target=(lo + hi) / 2,
                          precision=precision)
    result = search(space, data, cost, config, tmp_path / "search", progress=False,
                    log=lambda m: None)
    for record in result.metrics:
        assert torch.isfinite(torch.tensor(record["train_loss"]))
    assert result.metrics[-1]["arch_steps"] > 0
    assert all(torch.isfinite(a).all() for a in result.supernet.arch_parameters())
    assert all(a.dtype == torch.float32 for a in result.supernet.arch_parameters())
    checkpoint = torch.load(tmp_path / "search" / "checkpoint.pt", weights_only=True)
    assert bool(checkpoint["grad_scaler"]) == (precision == "fp16")  # the scale is kept
    final = train_network(result.arch, data, TrainConfig(epochs=1, batch_size=25,
                                                         precision=precision),
                          tmp_path / "train", progress=False, log=lambda m: None)
    trained = [json.loads(line) for line in
               (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    losses = [final.test_loss, *(r["train_loss"] for r in trained)]
    assert torch.isfinite(torch.tensor(losses)).all()


def alpha_gradient(net: SuperNet, precision: str, estimator: str, x, y) -> torch.Tensor:
    net.sample_gates(estimator, torch.Generator().manual_seed(3))
    for alpha in net.arch_parameters():
        alpha.grad = None
    with net.frozen_weights(), frozen_bn_statistics(net):
        with Precision(precision, "cpu").autocast():
            logits = net(x)
        nn.functional.cross_entropy(logits.float(), y).backward()
    net.set_alpha_grads()
    return torch.cat([a.grad.flatten() for a in net.arch_parameters()])


def test_the_architecture_gradient_in_bf16_matches_fp32(builtin_subset):
    """On a supernet trained for 200 steps, α's gradient with the forward and backward in
    bf16 autocast is within 5% (relative L2) of fp32's, for both estimators. (An ad-hoc
    check at 300 steps, not kept in bench/, gave 1% and 2.5%, with two validation batches
    30-40% apart in fp32; on an untrained supernet the gradient is all noise and no
    precision agrees with another.)"""
    torch.manual_seed(0)
    data = builtin_subset(2000, 0)
    x_all = data.train.images.float().div(255).sub(0.29).div(0.35)
    y_all = data.train.labels
    net = SuperNet(tiny_space()).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9)
    draws = torch.Generator().manual_seed(1)
    for _ in range(200):
        batch = torch.randint(0, 1500, (64,), generator=draws)
        net.sample_gates("sample", draws)
        loss = nn.functional.cross_entropy(net(x_all[batch]), y_all[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = x_all[1500:1756], y_all[1500:1756]
    for estimator in ("two", "recompute"):
        exact = alpha_gradient(net, "fp32", estimator, x, y)
        low = alpha_gradient(net, "bf16", estimator, x, y)
        assert ((low - exact).norm() / exact.norm()).item() < 0.05, estimator


def test_the_weight_step_holds_one_paths_activations():
    """The search's weight step keeps for backward what the standalone network of the sampled
    path keeps: at most 1.2x (measured 1.00x), whatever the number of candidates."""
    space = load_space("fashion")
    torch.manual_seed(0)
    net = SuperNet(space).to(memory_format=torch.channels_last)
    x = torch.randn(32, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    net.sample_gates("sample", torch.Generator().manual_seed(0))
    path = net.active_architecture()
    standalone = build_network(path).to(memory_format=torch.channels_last)
    search_step = saved_for_backward(lambda: net(x).sum())
    alone = saved_for_backward(lambda: standalone(x).sum())
    assert search_step <= 1.2 * alone
    net.sample_gates("full")  # every path at once (DARTS-like), for scale
    assert saved_for_backward(lambda: net(x).sum()) > 2 * alone


def test_losses_are_read_in_batches_and_the_bad_batch_is_named():
    losses = StepLosses("the training loss", total=100, every=25)
    for i in range(24):
        assert losses.add(i, torch.tensor(1.0 + i)) is None  # nothing read yet
    assert losses.add(24, torch.tensor(0.5)) == 0.5  # the 25th reads all of them at once
    for i in range(25, 40):
        losses.add(i, torch.tensor(float("nan") if i == 31 else 1.0))
    with pytest.raises(Diverged) as err:
        losses.flush()
    assert err.value.batch == "32/100" and "nan" in str(err.value)


def test_alpha_is_copied_to_the_host_only_when_it_changes():
    net = SuperNet(tiny_space())
    first = net.host_alphas()
    net.sample_gates("sample", torch.Generator().manual_seed(0))
    assert all(a is b for a, b in zip(first, net.host_alphas(), strict=True))  # no new copy
    optimizer = torch.optim.Adam(net.arch_parameters(), lr=0.1)
    for alpha in net.arch_parameters():
        alpha.grad = torch.ones_like(alpha)
    optimizer.step()
    after = net.host_alphas()
    assert all(not torch.equal(a, b) for a, b in zip(first, after, strict=True))
    assert all(torch.equal(a, alpha.detach().double())
               for a, alpha in zip(after, net.arch_parameters(), strict=True))
    arch = Architecture.from_indices(net.space, [int(a.argmax()) for a in after])
    assert net.derive() == arch
    net.sample_gates("sample")
    assert all(op.gates is None for op in net.mixed_ops)  # no gate tensor in weight steps


RANK_SCRIPT = """
import json, sys, torch
from pathlib import Path
from proxyless.engine import distributed
from proxyless.data import load_data
from proxyless.latency.cost import flops_model
from proxyless.engine.memory import saved_for_backward
from proxyless.search import SearchConfig, search
from proxyless.model.space import SearchSpace, StageSpec, load_space

out = Path(sys.argv[1])
space = SearchSpace(name="tiny-ranks", input_size=28, in_channels=1, num_classes=10,
                    stem=load_space("fashion").stem,
                    stages=(StageSpec(16, 2, 2), StageSpec(24, 1, 2)),
                    candidates=("k3e3", "k5e6", "zero"), feature_mix=32)
info = distributed.setup("cpu")
data = load_data("builtin", val_size=200, notify=None)
cost = flops_model(space)
lo, hi = cost.bounds()
config = SearchConfig(epochs=2, warmup_epochs=1, batch_size=50, arch_every=2, train_limit=600,
                      eval_limit=100, metric="flops", target=(lo + hi) / 2, precision="bf16")
result = search(space, data, cost, config, out / "search", progress=False, log=lambda m: None)
alpha = torch.cat([a.detach().flatten() for a in result.supernet.arch_parameters()])
(out / f"rank{info.rank}.json").write_text(json.dumps(
    {"arch": result.arch.encode(), "alpha": alpha.tolist(),
     "expected_flops": result.metrics[-1]["expected_flops"],
     "multiplier": result.metrics[-1]["multiplier"]}))
distributed.finish()
"""


@pytest.mark.slow
def test_two_gloo_ranks_in_bf16_agree_on_alpha_and_the_architecture(tmp_path):
    """torchrun, 2 processes: each rank holds its shard of every batch, yet α (to the bit),
    the expected cost (the latency loss's input), the multiplier and the derived network
    are the same on both."""
    (tmp_path / "ranks.py").write_text(RANK_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(tmp_path / "ranks.py"), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert len((tmp_path / "search" / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu(tmp_path):
    """bench/gpu_check.py in its CPU smoke mode: it cannot rot while no GPU is at hand."""
    script = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "gpu_check.py")
    proc = subprocess.run([sys.executable, script, "--device", "cpu", "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = report["steps"]
    for name in ("weight_step", "arch_step_two", "arch_step_recompute"):
        assert steps[name]["images_per_s"] > 0 and steps[name]["path"]
    assert steps["weight_step"]["memory_ratio"] <= 1.2  # one path's activations
    assert report["profile"]["ok"] and report["latency_check"]["samples"] == 4
    assert report["torchrun_smoke"]["ok"]
    assert (tmp_path / "torchrun-search" / "arch.json").exists()
    assert "GPU check" in (tmp_path / "gpu_check.txt").read_text()


def test_gpu_tables_and_profiles_default_to_the_papers_gpu_setting(tmp_path):
    from proxyless.cli import build_parser
    from proxyless.cli.search import resolve_profile_args
    from proxyless.latency.measure import timer_for
    from proxyless.latency.table import LatencyTable

    args = build_parser().parse_args(["run", "--device", "cuda"])
    resolve_profile_args(args)
    assert (args.profile_backend, args.profile_batch) == ("torch", 8)  # its own GPU, batch 8
    args = build_parser().parse_args(["run"])
    resolve_profile_args(args)
    assert (args.profile_backend, args.profile_batch) == ("onnxruntime", 1)
    args = build_parser().parse_args(["run", "--device", "cuda", "--profile-batch", "1"])
    resolve_profile_args(args)
    assert args.profile_batch == 1  # given: kept
    # a GPU table is refused for measuring on a machine with another GPU (or none)
    table = LatencyTable(meta={"backend": "torch", "device": "cuda", "threads": 1,
                               "gpu": "NVIDIA H100 80GB HBM3"})
    with pytest.raises(ProxylessError, match="H100"):
        timer_for(table)


def test_a_search_begun_before_the_two_sided_target_resumes_one_sided_only():
    """Its checkpoint has no target_floor: it ran with none (0), not today's default."""
    from proxyless.engine.epochs import changed_settings

    old = {"config": {k: v for k, v in SearchConfig().__dict__.items() if k != "target_floor"}}
    legacy = {"target_floor": 0.0}
    assert changed_settings(old, SearchConfig(), (), legacy) == ["target_floor"]
    assert changed_settings(old, SearchConfig(target_floor=0.0), (), legacy) == []


def test_auto_on_a_cpu_times_bf16_only_where_it_can_pay_and_keeps_the_faster(monkeypatch):
    from proxyless.engine import training_speed as speed

    net = build_network(Architecture.uniform(tiny_space(), "k3e3"))
    x, y, loss = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)), nn.CrossEntropyLoss()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    real = speed.choose_cpu_precision(net, x, y, loss)
    assert real.fp32_ms > 0 and real.precision.name in ("fp32", "bf16")
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # a copy ran
    # a short run (the work of a few seconds even on a fast CPU) is not timed at all
    never = lambda: pytest.fail("a short run was timed")  # noqa: E731
    cpu = torch.device("cpu")
    assert speed.chosen_precision("auto", cpu, 1e9, never)[1]["reason"] == speed.SHORT
    assert speed.chosen_precision("bf16", cpu, 1e18, never)[0].name == "bf16"  # as given
    earlier = {"precision": "bf16", "compile": False}
    assert speed.chosen_precision("auto", cpu, 1e18, never, earlier)[0].name == "bf16"

    times = {"fp32": 200.0, "bf16": 120.0}
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(speed, "step_ms", lambda model, x, y, loss, p, steps=2, warm=False:
                        times[p.name])
    long = speed.choose_cpu_precision(net, x, y, loss)
    assert long.precision.name == "bf16" and long.ratio == pytest.approx(200 / 120)
    times["bf16"] = 198.0  # within the margin: not worth a change of numerics
    assert speed.choose_cpu_precision(net, x, y, loss).precision.name == "fp32"
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: False)  # emulated: never
    assert "no native bf16" in speed.choose_cpu_precision(net, x, y, loss).reason
    # compile: repaid twice over by a modest gain, or not at all
    assert not speed.compile_pays_back(step_s=0.17, steps_left=4000)   # ~11 min of steps
    assert speed.compile_pays_back(step_s=2.0, steps_left=40_000)      # a day of steps
    # ... but not in bf16 on a CPU, where compiled steps were no faster
    assert not speed.compile_pays_back(2.0, 40_000, Precision("bf16", "cpu"))


def test_training_records_its_speed_decisions_and_a_resumed_run_keeps_them(tmp_path,
                                                                           builtin_subset):
    arch = Architecture.uniform(tiny_space(), "k3e3")
    config = TrainConfig(epochs=1, batch_size=50, compile="auto")
    data = builtin_subset(100, 0, 50)
    logs = []
    train_network(arch, data, config, tmp_path / "run", progress=False, log=logs.append)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["speed"]
    assert saved["precision"] == "fp32" and saved["compile"] is False
    assert saved["compile_setting"] == "auto" and "short run" in saved["reason"]
    assert any(line.startswith("training in fp32") and "not compiled" in line for line in logs)
    from proxyless.engine.training_speed import earlier_speed

    assert earlier_speed(tmp_path / "run") == saved
    assert earlier_speed(tmp_path / "nowhere") is None


def test_a_compiled_training_trains_and_says_so(tmp_path, builtin_subset):
    arch = Architecture.uniform(tiny_space(), "k3e3")
    logs = []
    final = train_network(arch, builtin_subset(200, 0, 50),
                          TrainConfig(epochs=1, batch_size=50, compile="on", precision="fp32"),
                          tmp_path / "run", progress=False, log=logs.append)
    assert final.test_top1 > 0 and (tmp_path / "run" / "model.pt").is_file()
    speed = json.loads((tmp_path / "run" / "config.json").read_text())["speed"]
    assert speed == {"precision": "fp32", "compile": True, "compile_setting": "on"}
