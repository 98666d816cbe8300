"""Plots (PNG) people would rather look at than read."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from proxyless.files import replace_atomically
from proxyless.model.space import parse_token


@functools.cache
def _pyplot():
    """matplotlib's pyplot, drawing to files only. Imported with the first picture, not with
    the package: it takes a third of a second that `proxyless --help` need not pay. Cached:
    the backend is chosen once, at the first picture, and left alone after."""
    import matplotlib  # heavy: deferred to the first picture (see above)

    matplotlib.use("Agg")  # files only: no screen on servers and CI
    import matplotlib.pyplot as plt  # heavy: deferred to the first picture

    return plt


_KERNEL_COLORS = {3: "#8ecae6", 5: "#ffb703", 7: "#fb8500"}


def _save(fig, path: str | Path) -> Path:
    """Write the figure (its folder made if need be) and free it: pyplot keeps every open
    figure alive, and a search draws many."""
    plt = _pyplot()
    path = Path(path)
    try:  # atomically: a full disk or a kill leaves the previous picture, never half of one
        replace_atomically(path, lambda f: fig.savefig(f, format=path.suffix[1:] or "png"))
    finally:
        plt.close(fig)
    return path


def _kernel_legend(ax, **where: Any) -> None:
    """The colour of each kernel size, placed by `where` (loc, bbox_to_anchor)."""
    plt = _pyplot()
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in _KERNEL_COLORS.values()]
    ax.legend(handles, [f"{k}x{k}" for k in _KERNEL_COLORS], fontsize=6, ncol=3,
              frameon=False, **where)


@dataclass(frozen=True)
class _Layout:
    """How a picture sizes and spaces its blocks; what they show (colour by kernel, size by
    expansion, a zero block as a thin mark, a tick where a stage starts) is `_draw_blocks`'s,
    the same in every picture."""

    box: Callable[[int], tuple[float, float]]  # expansion -> box width, height
    gap: float          # after each block
    zero: float         # a zero block's mark length
    tick: float         # half the height of a stage tick
    channels: bool      # write each stage's width above its first block
    tokens: bool        # write each block's token under it


_PAPER = _Layout(lambda e: (0.8, 0.5 + 0.2 * e), 0.2, 0.8, 2.0, True, True)
_ROW = _Layout(lambda e: (0.3 + 0.1 * e, 0.3 + 0.1 * e), 0.15, 0.2, 0.55, False, False)


def _draw_blocks(ax, arch, x: float, y: float, layout: _Layout) -> float:
    """One network's blocks from `x` along the line `y`; returns where the row ends."""
    plt = _pyplot()
    stage = -1
    for slot, token in zip(arch.space.slots(), arch.blocks, strict=True):
        if slot.stage != stage:
            stage = slot.stage
            ax.plot([x - 0.1, x - 0.1], [y - layout.tick, y + layout.tick], color="0.85",
                    lw=0.8)
            if layout.channels:
                ax.text(x, y + 1.75, f"{slot.out_channels}ch", fontsize=6, color="0.4")
        spec = parse_token(token)
        if spec.is_zero:
            ax.plot([x, x + layout.zero], [y, y], color="0.65", lw=1.2, ls=":")
            x += layout.zero + layout.gap
            continue
        width, height = layout.box(spec.expand)
        ax.add_patch(plt.Rectangle((x, y - height / 2), width, height,
                                   color=_KERNEL_COLORS.get(spec.kernel, "0.5")))
        if layout.tokens:
            ax.text(x + width / 2, y - height / 2 - 0.1, token.upper().replace("K", "").replace(
                "E", "x"), ha="center", va="top", fontsize=5, rotation=90)
        x += width + layout.gap
    return x


def latency_scatter(measured, plain, calibrated, path: str | Path, title: str) -> Path:
    """Predicted vs measured latency, plain table sum and calibrated, with the ±10% band."""
    plt = _pyplot()
    measured, plain, calibrated = map(np.asarray, (measured, plain, calibrated))
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    lo = min(measured.min(), plain.min(), calibrated.min()) * 0.9
    hi = max(measured.max(), plain.max(), calibrated.max()) * 1.1
    line = np.array([lo, hi])
    ax.fill_between(line, line * 0.9, line * 1.1, color="0.9", label="±10%")
    ax.plot(line, line, color="0.5", lw=1)
    ax.scatter(measured, plain, s=14, marker="x", color="tab:orange", label="table sum")
    ax.scatter(measured, calibrated, s=14, color="tab:blue", label="calibrated")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="measured latency (ms)",
           ylabel="predicted latency (ms)", title=title)
    ax.title.set_fontsize(9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def probs_evolution(probs_history, tokens_per_block, path: str | Path, title: str = "") -> Path:
    """How each block's p evolved over the epochs (one small stacked area chart per block)."""
    return _save(probs_figure(probs_history, tokens_per_block, title), path)


def probs_figure(probs_history, tokens_per_block, title: str = ""):
    """The figure of `probs_evolution` (also TensorBoard's picture of p after each epoch).
    Laid out by hand, with autoscaling off and stacks filled as polygons: tight_layout,
    shared axes and stackplot made it take seconds, too much to draw at every epoch."""
    plt = _pyplot()
    history = [[np.asarray(p) for p in epoch] for epoch in probs_history]
    blocks = len(tokens_per_block)
    cols = min(blocks, 6)
    rows = (blocks + cols - 1) // cols
    width, height = 2.3 * cols, 1.8 * rows + 0.6
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), dpi=110, squeeze=False)
    fig.subplots_adjust(left=0.35 / width, right=1 - 0.1 / width, bottom=0.6 / height,
                        top=1 - 0.6 / height, wspace=0.12, hspace=0.45)
    all_tokens = sorted({t for tokens in tokens_per_block for t in tokens},
                        key=lambda t: (t == "zero", t))
    cmap = plt.get_cmap("tab10")
    colors = {t: ("0.8" if t == "zero" else cmap(i)) for i, t in enumerate(all_tokens)}
    epochs = np.arange(len(history), dtype=float)
    last = max(len(history) - 1, 1)
    for b, tokens in enumerate(tokens_per_block):
        ax = axes[b // cols][b % cols]
        ax.set_autoscale_on(False)
        ax.set_xlim(0, last)
        ax.set_ylim(0, 1)
        series = np.stack([epoch[b] for epoch in history], axis=1)
        tops = np.cumsum(series, axis=0)
        bottoms = tops - series
        for k, token in enumerate(tokens):  # each candidate a band between two cumulated p
            outline = np.concatenate([np.stack([epochs, tops[k]], 1),
                                      np.stack([epochs[::-1], bottoms[k][::-1]], 1)])
            ax.add_patch(plt.Polygon(outline, closed=True, color=colors[token], linewidth=0))
        best = tokens[int(np.argmax(series[:, -1]))]
        ax.set_title(f"block {b}: {best}", fontsize=8)
        ax.tick_params(labelsize=6)
        # ticks on the outer panels only: each tick label is text to lay out and render
        ax.set_yticks([0, 0.5, 1] if b % cols == 0 else [])
        ax.set_xticks(range(0, last + 1, -(-last // 4)) if b + cols >= blocks else [])
    for b in range(blocks, rows * cols):
        axes[b // cols][b % cols].axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[t]) for t in all_tokens]
    fig.legend(handles, all_tokens, loc="lower center", ncol=len(all_tokens), fontsize=7,
               frameon=False)
    fig.suptitle(title or "architecture probabilities p per block over epochs", fontsize=9)
    return fig


def arch_picture(arch, path: str | Path, title: str = "") -> Path:
    """The derived network as in the paper's figure: one box per block, height = expansion,
    colour = kernel size; zero blocks a dotted mark, stage boundaries and widths marked."""
    return _save(arch_figure(arch, title), path)


def arch_figure(arch, title: str = ""):
    """`arch_picture`'s figure, not yet saved."""
    plt = _pyplot()
    slots = arch.space.slots()
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(slots) + 2), 2.8), dpi=120)
    end = _draw_blocks(ax, arch, 1.0, 0.0, _PAPER)
    for x, name in ((0.0, "stem"), (end, "mix+fc")):
        ax.add_patch(plt.Rectangle((x, -0.4), 0.8, 0.8, color="0.6"))
        ax.text(x + 0.4, -0.6, name, ha="center", va="top", fontsize=6)
    # below the drawing, outside the axes: inside, it covered the last stage's width label
    _kernel_legend(ax, loc="upper center", bbox_to_anchor=(0.5, 0.0))
    ax.set_xlim(-0.3, end + 1.1)
    ax.set_ylim(-2.2, 2.1)
    ax.axis("off")
    ax.set_title(title or arch.encode(), fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))  # room under the axes for the legend
    return fig


def training_curves(metrics: list[dict], path: str | Path, keys: tuple[str, ...],
                    title: str) -> Path:
    """Accuracy curves per epoch (e.g. train_top1 / test_top1)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    epochs = [m["epoch"] for m in metrics]
    for key in keys:
        ax.plot(epochs, [m.get(key) for m in metrics], marker="o", ms=3, label=key)
    ax.set(xlabel="epoch", ylabel="%", title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _pareto_panel(ax, names, top1, xs, on_front, xlabel: str) -> None:
    """One panel: each network with both figures, labelled; the front as a step line."""
    shown = [(x, y, name, front) for name, y, x, front in zip(names, top1, xs, on_front,
                                                              strict=True)
             if x is not None and y is not None]
    if not shown:
        ax.text(0.5, 0.5, "no figures to plot", ha="center", va="center",
                transform=ax.transAxes, fontsize=8, color="0.4")
    for x, y, name, front in shown:
        ax.scatter([x], [y], s=40 if front else 22, zorder=3,
                   color="tab:red" if front else "0.6", edgecolors="black" if front else "none")
        ax.annotate(name, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
    front = sorted((x, y) for x, y, _, on in shown if on)
    if front:
        ax.step([x for x, _ in front], [y for _, y in front], where="post", color="tab:red",
                lw=1, alpha=0.7, label="Pareto front")
        ax.legend(fontsize=7, loc="best")
    ax.margins(0.15)  # room for the labels of the outer points
    ax.set(xlabel=xlabel, ylabel="test top-1 (%)")
    ax.grid(alpha=0.3)


def pareto_panels(names, top1, panels, path: str | Path, title: str = "") -> Path:
    """Accuracy against each cost (`panels`: (x label, x values, on-front flags)), side by
    side, so the networks that trade accuracy for speed best stand out."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), dpi=120,
                             squeeze=False)
    for ax, (xlabel, xs, on_front) in zip(axes[0], panels, strict=True):
        _pareto_panel(ax, names, top1, xs, on_front, xlabel)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def architectures_side_by_side(archs, labels, path: str | Path, title: str = "") -> Path:
    """Networks one row each, block by block, as in the paper's figure of its GPU, CPU and
    mobile models: how the networks found for different hardware differ at a glance."""
    plt = _pyplot()
    fig, ax = plt.subplots(dpi=120)
    length = max(_draw_blocks(ax, arch, 0.0, -1.8 * row, _ROW)
                 for row, arch in enumerate(archs))
    for row, label in enumerate(labels):
        ax.text(0, -1.8 * row + 0.6, label, fontsize=7, va="bottom")
    _kernel_legend(ax, loc="lower right", bbox_to_anchor=(1, 1))
    width, height = max(length, 12.0) + 0.6, 1.8 * len(archs) + 0.4
    ax.set_xlim(-0.3, width - 0.3)
    ax.set_ylim(-1.8 * (len(archs) - 1) - 0.8, 1.6)
    ax.set_aspect("equal")  # square boxes stay square: size shows the expansion
    inches = min(14.0, 0.5 * width)
    fig.set_size_inches(inches, inches * height / width + 0.5)
    ax.axis("off")
    ax.set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    return _save(fig, path)


def retarget_picture(summaries, names, path: str | Path, title: str = "") -> Path:
    """Re-targeted networks (`SearchSummary`s): the supernet's validation top-1 of each against
    its latency, predicted (open) and measured (filled), each target a dotted line; or
    against MACs where targets are multiply-adds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, s) in enumerate(zip(names, summaries, strict=True)):
        color = colors[i % len(colors)]
        if s.target_ms is None:
            ax.scatter([s.macs / 1e6], [s.val_top1], color=color, zorder=3)
            ax.annotate(name, (s.macs / 1e6, s.val_top1), xytext=(4, 4),
                        textcoords="offset points", fontsize=7)
            continue
        if s.predicted_ms is not None:
            ax.scatter([s.predicted_ms], [s.val_top1], facecolors="none", edgecolors=color,
                       zorder=3, label="predicted" if i == 0 else None)
        if s.measured_ms is not None:
            ax.scatter([s.measured_ms], [s.val_top1], color=color, zorder=3,
                       label="measured" if i == 0 else None)
        ax.axvline(s.target_ms, color=color, ls=":", lw=1)
        x = s.measured_ms if s.measured_ms is not None else s.predicted_ms
        if x is not None:
            ax.annotate(name, (x, s.val_top1), xytext=(4, 4), textcoords="offset points",
                        fontsize=7)
    metric = "MMACs" if all(s.target_ms is None for s in summaries) else \
        "latency (ms); dotted: the targets"
    ax.set(xlabel=metric, ylabel="val top-1 on the supernet's weights (%)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.margins(0.15)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
