"""Which paths a weight step trains: the warm-up's, FairNAS's strict fairness, BigNAS's
sandwich rule (the search loop's `weight_step` picks one per step)."""

from __future__ import annotations

import torch

from proxyless.model.supernet import SuperNet


def warmup_paths(net: SuperNet, step: int, warm_steps: int, parent_steps: int,
                 generator: torch.Generator) -> list[int] | None:
    """The active path of every block for warm-up step `step` (None: draw from p).

    Candidates have their own weights, so with uniform random paths from a random start the
    layers after a block see unrelated features from step to step, and a short warm-up
    learns next to nothing (on `fashion`: ~20% train top-1 after 400 steps against 80% for
    one fixed path). So the warm-up first trains the largest path alone, copies it into the
    other candidates (`MixedOp.inherit_from_parent`), then anneals linearly from that path to
    uniform random paths, and the search starts from a supernet whose paths all work.
    """
    if step >= warm_steps or parent_steps == 0:
        return None
    parents = net.parent_indices()
    if step < parent_steps:
        return parents
    keep_parent = 1.0 - (step - parent_steps) / max(warm_steps - parent_steps, 1)
    paths = []
    for op, parent in zip(net.mixed_ops, parents, strict=True):
        if torch.rand((), generator=generator).item() < keep_parent:
            paths.append(parent)
        else:
            paths.append(int(torch.randint(len(op.tokens), (), generator=generator)))
    return paths


def fair_paths(net: SuperNet, generator: torch.Generator) -> list[list[int]]:
    """FairNAS's strict fairness: as many paths as the largest block has candidates, in which
    every block runs each of its candidates exactly once (a random permutation; a block with
    fewer candidates fills the rest with random ones). Candidates trained equally often rank
    by what they are, not by how often p happened to pick them."""
    width = max(len(op.tokens) for op in net.mixed_ops)
    columns = []
    for op in net.mixed_ops:
        count = len(op.tokens)
        order = torch.randperm(count, generator=generator).tolist()
        order += torch.randint(count, (width - count,), generator=generator).tolist()
        columns.append(order)
    return [[column[k] for column in columns] for k in range(width)]


def sandwich_paths(net: SuperNet, sampled: list[int] | None) -> list[list[int] | None]:
    """BigNAS's sandwich rule: the largest path (the teacher, first), the smallest path, and
    the one the step would have trained anyway (`sampled`; None: drawn from p). Training the
    two extremes every step keeps the whole range of the space trained, so the supernet's
    small and large networks are scored on weights of equal standing."""
    return [net.parent_indices(), net.smallest_indices(), sampled]
