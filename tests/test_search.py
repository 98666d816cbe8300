"""The search loop end to end on tiny data: outputs, exact resume, targets that bind."""

import itertools
import json
import math
import random

import pytest
import torch

from proxyless import load_space
from proxyless.data import DataSplits
from proxyless.errors import ProxylessError
from proxyless.latency.cost import flops_model, params_model
from proxyless.model.space import SearchSpace, StageSpec
from proxyless.search import SearchConfig, search
from proxyless.search.losses import hardware_loss
from proxyless.search.outputs import write_search_outputs


def tiny_space() -> SearchSpace:
    return SearchSpace(name="tiny-fashion", input_size=28, in_channels=1, num_classes=10,
                       stem=load_space("fashion").stem,
                       stages=(StageSpec(16, 2, 2), StageSpec(24, 2, 2), StageSpec(32, 1, 2)),
                       candidates=("k3e3", "k5e6", "k7e6", "zero"), feature_mix=64)


@pytest.fixture(scope="module")
def tiny_data(builtin_subset) -> DataSplits:
    return builtin_subset(1000, 200)


def config(**changes) -> SearchConfig:
    base = dict(warmup_epochs=1, epochs=2, batch_size=50, arch_every=1, arch_lr=0.05,
                eval_limit=200, seed=1)
    base.update(changes)
    return SearchConfig(**base)


def test_search_writes_its_outputs(tmp_path, tiny_data):
    space = tiny_space()
    cost = flops_model(space)
    cfg = config(metric="flops", target=cost.bounds()[0] * 1.2)
    result = search(space, tiny_data, cost, cfg, tmp_path, progress=False,
                    also_log=[params_model(space)])
    summary = write_search_outputs(result, tmp_path, cfg, None, None)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["phase"] for m in lines] == ["warmup", "search", "search"]
    assert lines[0]["arch_steps"] == 0 and lines[1]["arch_steps"] == 0  # none in 1st search
    assert lines[2]["arch_steps"] > 0
    for key in ("train_loss", "train_top1", "val_top1", "expected_flops", "argmax_flops",
                "entropy", "arch", "expected_params", "argmax_params"):
        assert key in lines[-1]
    for key in ("arch", "predicted_ms", "measured_ms", "params", "macs", "target_ms",
                "weight_sharing", "peak_rss_mib"):
        assert key in summary.to_dict()
    for name in ("arch.json", "summary.json", "probs.png", "arch.png", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_size > 0
    assert len(result.probs_history) == 4  # initial + one per epoch
    # --precision auto on a CPU: a run this short stays fp32 without timing bf16, and says so
    speed = json.loads((tmp_path / "config.json").read_text())["speed"]
    assert speed["precision"] == "fp32" and "short run" in speed["reason"]


@pytest.mark.parametrize(("strategy", "sharing"), [("gradient", "separate"),
                                                 ("reinforce", "separate"),
                                                 ("gradient", "entangled")])
def test_resume_gives_the_same_architecture(tmp_path, tiny_data, monkeypatch, strategy,
                                            sharing):
    space = tiny_space()
    cost = flops_model(space)
    cfg = config(metric="flops", target=cost.bounds()[0] * 1.5, epochs=3, strategy=strategy,
                 reinforce_samples=4, weight_sharing=sharing)
    full = search(space, tiny_data, cost, cfg, tmp_path / "a", progress=False)

    import proxyless.search.loop as loop

    real, calls = loop.evaluate_argmax, []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # in the last epoch: α steps, Adam and ν come from a checkpoint
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_argmax", interrupt)
    with pytest.raises(KeyboardInterrupt):
        search(space, tiny_data, cost, cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(loop, "evaluate_argmax", real)
    with pytest.raises(ProxylessError, match="--resume"):
        search(space, tiny_data, cost, cfg, tmp_path / "b", progress=False)
    resumed = search(space, tiny_data, cost, cfg, tmp_path / "b", resume=True, progress=False)
    assert resumed.arch == full.arch
    for a, b in zip(full.supernet.arch_parameters(), resumed.supernet.arch_parameters(),
                    strict=True):
        assert torch.equal(a, b)
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "b" / "metrics.jsonl").read_text()
              .splitlines()]
    assert epochs == [1, 2, 3, 4]


@pytest.mark.parametrize("estimator", ["two", "recompute"])
def test_a_lower_target_gives_a_cheaper_network(tmp_path, tiny_data, estimator):
    space = tiny_space()
    cost = flops_model(space)
    lo, hi = cost.bounds()
    archs = {}
    for name, target in (("none", None), ("low", lo)):
        cfg = config(metric="flops", target=target, loss="add-linear", loss_lambda=2.0,
                     estimator=estimator, epochs=3)
        archs[name] = search(space, tiny_data, cost, cfg, tmp_path / name,
                             progress=False).arch
    assert cost.predict(archs["low"]) < cost.predict(archs["none"])


def test_search_needs_a_validation_split(tmp_path, tiny_data):
    data = DataSplits(tiny_data.train, None, tiny_data.test, tiny_data.name, tiny_data.source,
                      tiny_data.mean, tiny_data.std)
    with pytest.raises(ProxylessError, match="validation"):
        search(tiny_space(), data, None, config(), tmp_path, progress=False)


def test_losses_follow_their_formulas():
    ce = torch.tensor(2.0)
    e = torch.tensor(30.0)
    assert hardware_loss(ce, e, None) == ce
    want = 2.0 * 0.2 * (math.log(30.0) / math.log(20.0)) ** 0.3
    assert hardware_loss(ce, e, 20.0, "mul-log").item() == pytest.approx(want)
    assert hardware_loss(ce, e, 20.0, "add-linear").item() == pytest.approx(2.0 + 0.1 * 0.5)
    small = hardware_loss(ce, torch.tensor(3.0), 2.0, "mul-log").item()
    at_target = hardware_loss(ce, torch.tensor(2.0), 2.0, "mul-log").item()
    assert at_target == pytest.approx(2.0 * 0.2) and small > at_target  # over target costs


def test_config_rejects_bad_values():
    for bad in (dict(estimator="three"), dict(loss="mul"), dict(epochs=0), dict(target=-1.0),
                dict(val_size=1.5)):
        with pytest.raises(ProxylessError):
            SearchConfig(**bad).validate()


def test_warmup_trains_the_parent_then_anneals_to_random_paths():
    from proxyless.model.supernet import SuperNet
    from proxyless.search.loop import warmup_paths

    net = SuperNet(tiny_space())
    parents = net.parent_indices()
    g = torch.Generator().manual_seed(0)
    assert all(warmup_paths(net, s, 100, 30, g) == parents for s in range(30))
    early = [warmup_paths(net, 31, 100, 30, g) for _ in range(50)]
    late = [warmup_paths(net, 99, 100, 30, g) for _ in range(50)]
    share = [sum(p == q for a in paths for p, q in zip(a, parents, strict=True))
             / (50 * len(parents)) for paths in (early, late)]
    assert share[0] > 0.9 and share[1] < 0.5
    assert warmup_paths(net, 100, 100, 30, g) is None  # the search draws from p
    assert warmup_paths(net, 5, 100, 0, g) is None     # warmup_parent=0: the paper's warm-up


def test_the_cost_model_must_be_for_the_searched_space(tmp_path, tiny_data):
    other = flops_model(load_space("fashion"))
    with pytest.raises(ProxylessError, match="not the searched space"):
        search(tiny_space(), tiny_data, other, config(metric="flops", target=10.0), tmp_path,
               progress=False)


def test_architecture_steps_leave_bn_running_statistics_alone(tiny_data):
    from proxyless.data import Batches
    from proxyless.model.supernet import SuperNet
    from proxyless.search.gradient import GradientStrategy

    space = tiny_space()
    net = SuperNet(space)
    strategy = GradientStrategy(net, flops_model(space), config(metric="flops", target=10.0))
    x, y = next(iter(Batches(tiny_data.val, 50, mean=tiny_data.mean, std=tiny_data.std,
                                shuffle=False, augment=False)))
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    strategy.step(x, y, torch.Generator().manual_seed(0))
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert any(a.grad is not None for a in net.arch_parameters())


def test_the_dual_multiplier_rises_over_the_target_and_falls_under_it():
    from proxyless.search.losses import constraint_term, dual_update

    nu = 0.0
    for _ in range(10):
        nu = dual_update(nu, cost=6.0, target=4.0, rate=0.1)  # 50% over
    assert nu == pytest.approx(0.5)
    for _ in range(100):
        nu = dual_update(nu, cost=3.0, target=4.0, rate=0.1)  # under: back to the paper's loss
    assert nu == 0.0
    expected = torch.tensor(5.0, requires_grad=True)
    term = constraint_term(expected, 4.0, 2.0)
    term.backward()
    assert term.item() == pytest.approx(0.5) and expected.grad.item() == pytest.approx(0.5)
    assert constraint_term(expected, None, 2.0) == 0.0


def test_the_constraint_binds_where_the_soft_loss_does_not(tmp_path, tiny_data):
    space = tiny_space()
    cost = flops_model(space)
    lo, hi = cost.bounds()
    target = lo + 0.15 * (hi - lo)  # below where cross-entropy alone takes this search
    results = {}
    for constraint in ("soft", "dual"):
        cfg = config(metric="flops", target=target, constraint=constraint, dual_lr=0.5,
                     epochs=3, target_floor=0.0)  # the upper side alone
        results[constraint] = search(space, tiny_data, cost, cfg, tmp_path / constraint,
                                     progress=False)

    def expected(result) -> float:  # E[cost] under the final p: what the losses act on
        return cost.expected([torch.tensor(p) for p in result.probs_history[-1]]).item()

    # The argmax of a 3-epoch search on 1,000 images is noisy (it differs between CPUs' float
    # rounding), so the soft loss is judged by where it leaves p: well above the target.
    assert expected(results["soft"]) > target * 1.1
    assert expected(results["dual"]) < expected(results["soft"])
    assert cost.predict(results["dual"].arch) <= target * 1.1


def test_the_most_likely_architecture_within_a_cost_range_is_exhaustive_searchs():
    cost = flops_model(tiny_space())
    lo, hi = cost.bounds()
    rng = random.Random(0)
    for _ in range(12):
        log_probs = [[math.log(rng.random()) for _ in c] for c in cost.block_costs]
        low = lo + rng.random() * (hi - lo)
        high = low + rng.random() * 0.2 * (hi - lo)
        best, best_logp = None, -math.inf
        for indices in itertools.product(*(range(len(c)) for c in cost.block_costs)):
            total = cost.fixed + sum(c[i] for c, i in zip(cost.block_costs, indices, strict=True))
            logp = sum(lp[i] for lp, i in zip(log_probs, indices, strict=True))
            if low <= total <= high and logp > best_logp:
                best, best_logp = list(indices), logp
        assert cost.most_likely_within(log_probs, low, high) == best
    # where the argmax is in range it is the answer; an empty range has none
    argmax = [max(range(len(lp)), key=lp.__getitem__) for lp in log_probs]
    assert cost.most_likely_within(log_probs, lo, hi) == argmax
    assert cost.most_likely_within(log_probs, lo - 2, lo - 1) is None
    # bounds beyond every network: no overflow, the same answers as the space's own range
    assert cost.most_likely_within(log_probs, -math.inf, 1e308) == argmax
    assert cost.most_likely_within(log_probs, -1e308, 1e308) == argmax
    assert cost.most_likely_within(log_probs, 0.95e308, 1e308) is None
    assert cost.most_likely_within(log_probs, -1e308, lo - 1) is None


def test_a_target_binds_from_both_sides(tmp_path, tiny_data):
    """A loss that keeps rewarding cheaper networks (add-linear, λ = 2) leaves the one-sided
    search far under its target; the floor brings the result into [0.95 T, T]."""
    space = tiny_space()
    cost = flops_model(space)
    lo, hi = cost.bounds()
    target = lo + 0.6 * (hi - lo)
    results = {}
    for floor in (0.0, 0.95):
        cfg = config(metric="flops", target=target, loss="add-linear", loss_lambda=2.0,
                     dual_lr=0.5, epochs=3, target_floor=floor)
        results[floor] = search(space, tiny_data, cost, cfg, tmp_path / str(floor),
                                progress=False, log=lambda m: None)
    assert cost.predict(results[0.0].arch) < 0.8 * target
    assert 0.95 * target <= cost.predict(results[0.95].arch) <= target
    assert min(m.get("multiplier", 0.0) for m in results[0.95].metrics) < 0  # pulled up
    assert results[0.95].metrics[-1]["arch"] == results[0.95].arch.encode()


def test_reinforce_takes_a_measured_latency_and_user_objectives(tmp_path, tiny_data):
    space = tiny_space()
    seen = []

    def latency(arch):  # stands for any measurement: no table, no gradient
        seen.append(arch)
        return 1.0 + sum(token != "zero" for token in arch.blocks)

    def no_k7(arch):  # a user objective: networks with a 7x7 kernel score near nothing
        return 0.05 if any(token.startswith("k7") for token in arch.blocks) else 1.0

    cfg = config(strategy="reinforce", target=4.0, epochs=3, arch_lr=0.3, reinforce_samples=6)
    result = search(space, tiny_data, None, cfg, tmp_path / "r", progress=False,
                    latency_fn=latency, objectives=[no_k7])
    assert seen and not any(t.startswith("k7") for t in result.arch.blocks)
    with pytest.raises(ProxylessError, match="reinforce"):
        search(space, tiny_data, None, config(), tmp_path / "g", progress=False,
               objectives=[no_k7])
    with pytest.raises(ProxylessError, match="--strategy reinforce"):
        SearchConfig(measure_latency=True).validate()


def test_the_entropy_term_lowers_entropy_and_its_gradient_is_exact():
    from proxyless.search.losses import entropy_term

    alphas = [torch.tensor([0.3, -0.2, 0.1], requires_grad=True),
              torch.tensor([0.0, 0.5], requires_grad=True)]
    assert entropy_term(alphas, 0.0) == 0.0
    term = entropy_term(alphas, 2.0)
    term.backward()
    p = torch.softmax(alphas[0].detach(), 0)
    h = -(p * p.log()).sum()
    # dH/dα_j = -p_j (log p_j + H); the term is 2 · mean of two blocks' entropies
    assert torch.allclose(alphas[0].grad, -p * (p.log() + h), atol=1e-6)
    with torch.no_grad():
        stepped = [a - 0.1 * a.grad for a in alphas]
    assert entropy_term(stepped, 2.0) < term


@pytest.mark.parametrize("strategy", ["gradient", "reinforce"])
def test_decide_ends_the_search_more_decided(tmp_path, tiny_data, strategy):
    space = tiny_space()
    ends = []
    for decide in (0.0, 5.0):
        out = tmp_path / f"{strategy}-{decide}"
        result = search(space, tiny_data, None,
                        config(strategy=strategy, decide=decide, epochs=3, arch_lr=0.1),
                        out, progress=False)
        ends.append(result.metrics[-1]["entropy"])
    assert ends[1] < ends[0] - 0.1, ends


def test_decide_must_be_finite_and_not_negative():
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ProxylessError, match="decide"):
            config(decide=bad).validate()


# -- a loss or α that becomes NaN/inf stops the search, and no such epoch is checkpointed --
@pytest.fixture(scope="module")
def small_data(builtin_subset) -> DataSplits:
    return builtin_subset(300, 100)  # 6 training batches of 50


def kept_epochs(out) -> int:
    """The epoch the run folder's checkpoint holds (its metrics.jsonl agrees)."""
    epoch = torch.load(out / "checkpoint.pt", weights_only=True)["epoch"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == epoch
    return epoch


def test_a_nan_weight_loss_stops_the_search_and_resume_continues(tmp_path, small_data,
                                                                  monkeypatch):
    cfg, calls = config(epochs=2, eval_limit=100), []
    real = torch.nn.CrossEntropyLoss.forward  # the weight steps' loss (α steps: functional)

    def nan_in_epoch_two(self, logits, y):
        calls.append(1)
        return real(self, logits, y) * (math.nan if len(calls) == 6 + 3 else 1.0)

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", nan_in_epoch_two)
    with pytest.raises(ProxylessError) as err:
        search(tiny_space(), small_data, None, cfg, tmp_path, progress=False)
    message = str(err.value)
    assert "the weight step's loss became nan in epoch 2/3, batch 3/6; lower --lr" in message
    assert "--arch-lr" not in message and "last good epoch (1/3" in message
    assert kept_epochs(tmp_path) == 1
    monkeypatch.undo()
    resumed = search(tiny_space(), small_data, None, cfg, tmp_path, resume=True,
                     progress=False)
    assert [m["epoch"] for m in resumed.metrics] == [1, 2, 3] and kept_epochs(tmp_path) == 3


def test_a_nan_architecture_loss_blames_the_weights_not_alpha(tmp_path, small_data,
                                                               monkeypatch):
    from proxyless.search.gradient import GradientStrategy

    real = GradientStrategy.step

    def diverged_weights(self, x, y, generator):
        with torch.no_grad():
            self.net.weight_parameters()[-1].fill_(math.nan)  # the classifier's bias
        return real(self, x, y, generator)

    monkeypatch.setattr(GradientStrategy, "step", diverged_weights)
    cfg = config(warmup_epochs=0, epochs=2, eval_limit=100)  # α steps from epoch 2 on
    with pytest.raises(ProxylessError) as err:
        search(tiny_space(), small_data, None, cfg, tmp_path, progress=False)
    message = str(err.value)
    assert "architecture step's cross-entropy became nan in epoch 2/2, batch 1/6" in message
    assert "lower --lr" in message and "--arch-lr" not in message
    assert kept_epochs(tmp_path) == 1


def test_alpha_that_diverges_says_lower_the_arch_lr(tmp_path, small_data, monkeypatch):
    from proxyless.search.gradient import GradientStrategy

    real, calls = GradientStrategy.step, []

    def overshoot(self, x, y, generator):  # what too large a step does, finite loss and all
        stats = real(self, x, y, generator)
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                self.net.arch_parameters()[1][0] = -math.inf
        return stats

    monkeypatch.setattr(GradientStrategy, "step", overshoot)
    cfg = config(warmup_epochs=0, epochs=2, eval_limit=100)
    with pytest.raises(ProxylessError, match="α of block 1 became -inf in epoch 2/2, "
                                             "batch 2/6; lower --arch-lr"):
        search(tiny_space(), small_data, None, cfg, tmp_path, progress=False)
    assert kept_epochs(tmp_path) == 1
    alphas = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["supernet"]
    assert all(torch.isfinite(v).all() for k, v in alphas.items() if k.endswith("alpha"))


def test_a_nan_reinforce_reward_is_named(tmp_path, small_data):
    cfg = config(warmup_epochs=0, epochs=2, eval_limit=100, strategy="reinforce",
                 reinforce_samples=2)
    with pytest.raises(ProxylessError, match="REINFORCE reward became nan in epoch 2/2, "
                                             "batch 1/6; a sampled network's latency"):
        search(tiny_space(), small_data, None, cfg, tmp_path, progress=False,
               objectives=[lambda arch: math.nan])
    assert kept_epochs(tmp_path) == 1


def test_fair_paths_run_every_candidate_of_every_block_once(tiny_data):
    from proxyless.model.supernet import SuperNet
    from proxyless.search.loop import fair_paths

    net = SuperNet(tiny_space())
    paths = fair_paths(net, torch.Generator().manual_seed(0))
    width = max(len(op.tokens) for op in net.mixed_ops)
    assert len(paths) == width
    for b, op in enumerate(net.mixed_ops):
        column = [path[b] for path in paths]
        assert set(column[:len(op.tokens)]) == set(range(len(op.tokens)))
        assert all(0 <= i < len(op.tokens) for i in column)


def test_sandwich_steps_train_largest_smallest_and_a_drawn_path(tmp_path, tiny_data,
                                                                 monkeypatch):
    from proxyless.model.supernet import SuperNet

    net = SuperNet(tiny_space())
    largest, smallest = net.parent_indices(), net.smallest_indices()
    zero = [op.tokens.index("zero") if "zero" in op.tokens else None for op in net.mixed_ops]
    assert [op.tokens[i] for op, i in zip(net.mixed_ops, largest, strict=True)] == \
        ["k7e6"] * len(largest)
    assert smallest == [z if z is not None else op.tokens.index("k3e3")
                        for op, z in zip(net.mixed_ops, zero, strict=True)]
    assert any(z is not None for z in zero) and any(z is None for z in zero)

    weight_paths = []
    original = SuperNet.sample_gates

    def record(self, mode, generator=None, fixed=None):
        if mode == "sample":
            weight_paths.append(None if fixed is None else list(fixed))
        return original(self, mode, generator, fixed)

    monkeypatch.setattr(SuperNet, "sample_gates", record)
    cfg = config(sandwich=True, warmup_epochs=1, warmup_parent=0.5, epochs=2, arch_every=20)
    result = search(tiny_space(), tiny_data, None, cfg, tmp_path, progress=False)
    parent_steps = 10  # half the warm-up's 20 batches
    parent_phase, rest = weight_paths[:parent_steps], weight_paths[parent_steps:]
    assert all(p == largest for p in parent_phase)
    assert len(rest) == 3 * (3 * 20 - parent_steps)
    for k in range(0, len(rest), 3):
        assert rest[k] == largest and rest[k + 1] == smallest
    assert result.metrics[-1]["train_top1"] > 0
    assert math.isfinite(result.metrics[-1]["train_loss"])
    assert write_search_outputs(result, tmp_path, cfg, None, None).sandwich is True
    with pytest.raises(ProxylessError, match="--sandwich or --fair-paths"):
        config(sandwich=True, fair_paths=True).validate()


def test_a_search_with_fair_paths_trains_and_records_it(tmp_path, tiny_data):
    cfg = config(fair_paths=True, epochs=2)
    result = search(tiny_space(), tiny_data, None, cfg, tmp_path, progress=False)
    assert result.metrics[-1]["train_top1"] > 0
    summary = write_search_outputs(result, tmp_path, cfg, None, None)
    assert summary.fair_paths is True
