"""The binarized supernet: gates, the gate-gradient estimators, rescaling, deriving."""

import copy

import pytest
import torch

from proxyless import Architecture, load_space
from proxyless.model.space import SearchSpace, StageSpec
from proxyless.model.supernet import MixedOp, SuperNet, rescale_pair


def tiny_space() -> SearchSpace:
    return SearchSpace(name="tiny", input_size=8, in_channels=3, num_classes=5,
                       stages=(StageSpec(8, 2, 2), StageSpec(8, 2, 1)),
                       candidates=("k3e3", "k3e6", "k5e3", "zero"), feature_mix=16)


def make_net(seed: int = 0, weight_sharing: str = "separate") -> SuperNet:
    torch.manual_seed(seed)
    net = SuperNet(tiny_space(), weight_sharing=weight_sharing)
    with torch.no_grad():
        for op in net.mixed_ops:
            op.alpha.normal_(0, 0.5)  # distinct probabilities make the formula non-trivial
    return net


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 5, (6,), generator=g)


def loss_of(net, x, y):
    return torch.nn.functional.cross_entropy(net(x), y)


def reference_alpha_grads(net: SuperNet, actives, x, y, involved_sets):
    """dL/dα by the formula, with dL/dg_j from `full` mode (autograd on continuous gates)."""
    ref = copy.deepcopy(net)
    ref.sample_gates("full", fixed=actives)
    loss_of(ref, x, y).backward()
    grads = []
    for op, involved in zip(ref.mixed_ops, involved_sets, strict=True):
        g = op.gates.grad
        idx = torch.tensor(involved)
        p = torch.softmax(op.alpha.detach()[idx], 0)
        grad = torch.zeros_like(op.alpha)
        for a, i in enumerate(involved):
            grad[i] = sum(g[j] * p[b] * (float(i == j) - p[a]) for b, j in enumerate(involved))
        grads.append(grad)
    return grads


@pytest.mark.parametrize("sharing", ["separate", "entangled"])
@pytest.mark.parametrize("seed", range(3))
def test_recompute_estimator_matches_the_formula(seed, sharing):
    net = make_net(seed, sharing)
    x, y = batch(seed)
    net.sample_gates("recompute", torch.Generator().manual_seed(seed))
    actives = [op.active for op in net.mixed_ops]
    expected = reference_alpha_grads(net, actives, x, y,
                                     [list(range(len(op.tokens))) for op in net.mixed_ops])
    with net.frozen_weights():
        loss_of(net, x, y).backward()
    net.set_alpha_grads()
    for op, want in zip(net.mixed_ops, expected, strict=True):
        torch.testing.assert_close(op.alpha.grad, want, rtol=1e-4, atol=1e-7)
        assert op.alpha.grad.abs().sum() > 0


@pytest.mark.parametrize("sharing", ["separate", "entangled"])
@pytest.mark.parametrize("seed", range(3))
def test_two_path_estimator_matches_the_formula_on_the_pair(seed, sharing):
    net = make_net(seed, sharing)
    x, y = batch(seed)
    net.sample_gates("two", torch.Generator().manual_seed(seed))
    pairs = [list(op.involved) for op in net.mixed_ops]
    assert all(len(set(p)) == 2 and op.active in p for p, op in zip(pairs, net.mixed_ops,
                                                                       strict=True))
    actives = [op.active for op in net.mixed_ops]
    expected = reference_alpha_grads(net, actives, x, y, pairs)
    with net.frozen_weights():
        loss_of(net, x, y).backward()
    net.set_alpha_grads()
    for op, want, pair in zip(net.mixed_ops, expected, pairs, strict=True):
        torch.testing.assert_close(op.alpha.grad, want, rtol=1e-4, atol=1e-7)
        outside = [i for i in range(len(op.tokens)) if i not in pair]
        assert torch.all(op.alpha.grad[outside] == 0)


def test_zero_op_gate_gradient_is_kept():
    """A pair holding `zero`: its gate gradient is 0 but α still moves through p's coupling."""
    net = make_net(3)
    x, y = batch(3)
    op = net.mixed_ops[1]
    zero = op.tokens.index("zero")
    net.sample_gates("two", torch.Generator().manual_seed(0))
    op.set_gates("two", None, active=zero)
    with net.frozen_weights():
        loss_of(net, x, y).backward()
    gate_grad = op.gates.grad.clone()
    net.set_alpha_grads()
    assert gate_grad[zero] == 0 and gate_grad[op.involved[1]] != 0
    assert op.alpha.grad[zero] != 0


def test_two_path_update_rescale_keeps_unsampled_probabilities():
    net = make_net(4)
    x, y = batch(4)
    net.sample_gates("two", torch.Generator().manual_seed(4))
    optimizer = torch.optim.Adam(net.arch_parameters(), lr=0.05, betas=(0.0, 0.999))
    old_alpha = [op.alpha.detach().clone() for op in net.mixed_ops]
    old_probs = [op.probs().detach() for op in net.mixed_ops]
    with net.frozen_weights():
        loss_of(net, x, y).backward()
    net.set_alpha_grads()
    grads = [op.alpha.grad.clone() for op in net.mixed_ops]
    optimizer.step()
    for op, old in zip(net.mixed_ops, old_alpha, strict=True):
        rescale_pair(op.alpha, old, op.involved)
    for op, before, grad in zip(net.mixed_ops, old_probs, grads, strict=True):
        after = op.probs().detach()
        unsampled = [i for i in range(len(op.tokens)) if i not in op.involved]
        torch.testing.assert_close(after[unsampled], before[unsampled], atol=1e-6, rtol=0)
        torch.testing.assert_close(after[op.involved].sum(), before[op.involved].sum(),
                                   atol=1e-6, rtol=0)
        for i in op.involved:  # each sampled path moves against its gradient
            if grad[i].abs() > 1e-9:
                assert torch.sign(after[i] - before[i]) == -torch.sign(grad[i])


def test_sample_mode_runs_and_updates_only_the_sampled_paths():
    net = make_net(5)
    x, y = batch(5)
    calls = {}
    for b, op in enumerate(net.mixed_ops):
        for j, cand in enumerate(op.candidates):
            cand.register_forward_hook(lambda m, i, o, key=(b, j): calls.__setitem__(
                key, calls.get(key, 0) + 1))
    net.sample_gates("sample", torch.Generator().manual_seed(5))
    loss_of(net, x, y).backward()
    for b, op in enumerate(net.mixed_ops):
        for j, cand in enumerate(op.candidates):
            ran = calls.get((b, j), 0)
            assert ran == (1 if j == op.active else 0)
            for p in cand.parameters():
                assert (p.grad is not None) == (j == op.active)
        assert op.alpha.grad is None
    assert all(p.grad is not None for p in net.stem.parameters())


def test_recompute_leaves_bn_statistics_of_inactive_paths_alone():
    net = make_net(6)
    x, y = batch(6)
    net.train()
    net.sample_gates("recompute", torch.Generator().manual_seed(6))
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k
              or "num_batches" in k}
    with net.frozen_weights():
        loss_of(net, x, y).backward()
    after = net.state_dict()
    for b, op in enumerate(net.mixed_ops):
        for j in range(len(op.tokens)):
            prefix = f"blocks.{b}.op.candidates.{j}."
            keys = [k for k in before if k.startswith(prefix)]
            changed = any(not torch.equal(before[k], after[k]) for k in keys)
            assert changed == (j == op.active and bool(keys)), (b, j)


def test_argmax_and_derive():
    net = make_net(7)
    with torch.no_grad():
        for i, op in enumerate(net.mixed_ops):
            op.alpha.zero_()
            op.alpha[i % len(op.tokens)] = 1.0
    arch = net.derive()
    assert arch.indices() == [i % len(op.tokens) for i, op in enumerate(net.mixed_ops)]
    net.sample_gates("argmax")
    assert net.active_architecture() == arch
    derived = net.derived_network()
    chosen = sum(p.numel() for op, j in zip(net.mixed_ops, arch.indices(), strict=True)
                 for p in op.candidates[j].parameters())
    fixed = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("blocks."))
    assert sum(p.numel() for p in derived.parameters()) == chosen + fixed
    net.eval()
    derived.eval()
    x, _ = batch(7)
    with torch.no_grad():
        torch.testing.assert_close(derived(x), net(x))


def test_parameter_sets_are_disjoint_and_complete():
    net = make_net(8)
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    assert not arch & weights
    assert arch | weights == {id(p) for p in net.parameters()}
    assert len(arch) == len(net.mixed_ops)


def test_fixed_gates_hold_an_architecture():
    space = load_space("fashion")
    net = SuperNet(space)
    arch = Architecture.uniform(space, "k5e6")
    for mode in ("sample", "recompute", "full"):
        net.sample_gates(mode, fixed=arch)
        assert net.active_architecture() == arch
    net.sample_gates("two", fixed=arch)
    assert net.active_architecture() == arch
    assert all(len(set(op.involved)) == 2 for op in net.mixed_ops)


def test_full_mode_memory_holds_every_path_output():
    """`full` runs every candidate in forward (its reason to exist: DARTS-like cost)."""
    net = make_net(9)
    calls = []
    for op in net.mixed_ops:
        for cand in op.candidates:
            cand.register_forward_hook(lambda *a: calls.append(1))
    net.sample_gates("full")
    loss_of(net, *batch(9))
    assert len(calls) == sum(len(op.tokens) for op in net.mixed_ops)


def test_mixed_op_alpha_init_is_small():
    torch.manual_seed(0)
    op = MixedOp(load_space("imagenet").slots()[1])
    assert op.alpha.abs().max() < 1e-2 and len(op.alpha) == 7


def test_inherit_from_parent_copies_centres_and_first_channels():
    net = make_net(7)
    for op in net.mixed_ops:
        parent = op.candidates[op.parent_index()]
        assert (parent.expand_ratio, parent.kernel_size) == (6, 3)  # k3e6 in tiny_space
        op.inherit_from_parent()
        k5e3 = op.candidates[op.tokens.index("k5e3")]
        k3e3 = op.candidates[op.tokens.index("k3e3")]
        mid = k3e3.conv_dw.conv.weight.shape[0]
        assert torch.equal(k3e3.conv_pw.conv.weight, parent.conv_pw.conv.weight[:mid])
        assert torch.equal(k3e3.conv_dw.conv.weight, parent.conv_dw.conv.weight[:mid])
        assert torch.equal(k3e3.conv_pwl.conv.weight, parent.conv_pwl.conv.weight[:, :mid])
        assert torch.equal(k3e3.conv_dw.bn.weight, parent.conv_dw.bn.weight[:mid])
        # a larger kernel than the parent's: the parent's kernel in the centre, zeros around
        big = k5e3.conv_dw.conv.weight
        assert torch.equal(big[:, :, 1:4, 1:4], parent.conv_dw.conv.weight[:mid])
        ring = big.detach().clone()
        ring[:, :, 1:4, 1:4] = 0
        assert not ring.any()
        # the candidates still own their weights: training one leaves the parent alone
        assert k3e3.conv_pw.conv.weight.data_ptr() != parent.conv_pw.conv.weight.data_ptr()


def test_inherited_kernel_of_a_larger_size_computes_the_same_function():
    net = make_net(8)
    op = net.mixed_ops[1]  # stride 1, 8 -> 8 channels
    op.inherit_from_parent()
    parent, k5e3 = op.candidates[op.parent_index()], op.candidates[op.tokens.index("k5e3")]
    # k5e3 = parent (k3e6) restricted to its first channels; give the parent zeros in the
    # other channels' projection and the two compute the same thing
    with torch.no_grad():
        mid = k5e3.conv_dw.conv.weight.shape[0]
        parent.conv_pwl.conv.weight[:, mid:] = 0
    parent.eval()
    k5e3.eval()
    x = torch.randn(2, 8, 4, 4)
    assert torch.allclose(parent(x), k5e3(x), atol=1e-5)


def test_entangled_candidates_are_slices_of_one_kernel():
    net = make_net(10, "entangled")
    for op in net.mixed_ops:  # one MBConv's weights per block: k5 (largest), e6 (largest)
        assert not any(p.numel() for c in op.candidates for p in c.parameters())
        assert op.shared.conv_dw.conv.weight.shape[-1] == 5
    x, y = batch(10)
    net.sample_gates("sample", fixed=Architecture.uniform(net.space, "k3e3"))
    loss_of(net, x, y).backward()
    for op in net.mixed_ops:
        grad = op.shared.conv_dw.conv.weight.grad  # [mid(e6), 1, 5, 5]
        mid = op.shared.in_chs * 3
        assert grad[:mid, :, 1:4, 1:4].abs().sum() > 0
        outside = grad.clone()
        outside[:mid, :, 1:4, 1:4] = 0
        assert outside.abs().sum() == 0  # k3e3 trains the centre of the first channels only
    net.eval()
    for seed in range(3):
        arch = Architecture.from_indices(net.space, [
            (seed + i) % len(op.tokens) for i, op in enumerate(net.mixed_ops)])
        net.sample_gates("sample", fixed=arch)
        derived = net.derived_network(arch).eval()
        with torch.no_grad():
            torch.testing.assert_close(derived(x), net(x))


@pytest.mark.parametrize("mode", ["two", "recompute", "full"])
def test_gates_drawn_again_before_backward_keep_alphas_gradient(mode):
    """Backward credits the paths of its own forward, whatever was drawn since."""
    x, y = batch(11)
    grads = []
    for redraw in (False, True):
        net = make_net(11)
        net.sample_gates(mode, torch.Generator().manual_seed(11))
        drawn = [(op.active, list(op.involved)) for op in net.mixed_ops]
        with net.frozen_weights():
            loss = loss_of(net, x, y)
            if redraw:  # other paths, and new gate tensors, before backward
                net.sample_gates(mode, torch.Generator().manual_seed(12))
                assert [(op.active, list(op.involved)) for op in net.mixed_ops] != drawn
            loss.backward()
        net.set_alpha_grads()
        grads.append([op.alpha.grad.clone() for op in net.mixed_ops])
        assert all(g.abs().sum() > 0 for g in grads[-1])
    for plain, redrawn in zip(*grads, strict=True):
        torch.testing.assert_close(redrawn, plain, rtol=0, atol=0)


def test_zero_alpha_skip_drops_the_whole_gradient_of_a_block_whose_active_path_is_zero():
    """The reference code's mix_op.py: where the active op is zero, that block's α keeps no
    gradient for the step, its latency gradient included; the other blocks keep theirs."""
    from proxyless.latency.cost import flops_model  # E[cost]: a gradient on every α
    from proxyless.search.config import SearchConfig
    from proxyless.search.gradient import GradientStrategy

    x, y = batch(5)
    alphas = {}
    for mode in ("update", "skip"):
        net = make_net(5)
        config = SearchConfig(metric="flops", target=1.0, zero_alpha=mode, arch_lr=0.1)
        strategy = GradientStrategy(net, flops_model(net.space), config)
        zero_op = net.mixed_ops[1]
        real = net.mixed_ops[2]
        original = net.sample_gates

        def hold(mode_, generator=None, fixed=None, net=net, original=original):
            original(mode_, generator, fixed)
            net.mixed_ops[1].set_gates(mode_, generator, active=3)  # zero
            net.mixed_ops[2].set_gates(mode_, generator, active=0)  # k3e3

        net.sample_gates = hold
        before = [op.alpha.detach().clone() for op in net.mixed_ops]
        strategy.step(x, y, torch.Generator().manual_seed(0))
        assert zero_op.specs[zero_op.active].is_zero and not real.specs[real.active].is_zero
        alphas[mode] = (before, [op.alpha.detach().clone() for op in net.mixed_ops])
    (before, skipped), (_, updated) = alphas["skip"], alphas["update"]
    assert torch.equal(skipped[1], before[1])        # skip: the zero block's α stands still
    assert not torch.equal(updated[1], before[1])    # update: it moves
    assert not torch.equal(skipped[2], before[2])    # the other blocks move either way
