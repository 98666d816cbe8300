"""A finished run's `report.md`, beside its plots (`plots.py` draws them): the results table,
how good the latency model is, what the network costs in each runtime, and how it was found.
"""

from __future__ import annotations

from pathlib import Path

from proxyless.files import replace_atomically
from proxyless.model.space import SearchSpace
from proxyless.pipeline.results import RunResult
from proxyless.search.config import SearchConfig
from proxyless.training.trainer import TrainConfig


def strategy_details(scfg: SearchConfig) -> str:
    if scfg.strategy == "reinforce":
        latency = "measured end to end" if scfg.measure_latency else "from the table"
        return (f"{scfg.reinforce_samples} architectures per update, reward "
                f"`{scfg.reward}`, latency {latency}")
    return f"loss `{scfg.loss}`, estimator `{scfg.estimator}`"


def weight_paths(scfg: SearchConfig) -> str:
    if scfg.fair_paths:
        return "fair (every candidate once per step)"
    if scfg.sandwich:
        return "sandwich (largest, smallest and sampled, distilled from the largest)"
    return "sampled"


RUNTIME_LABELS = {"torch": "PyTorch (eager), fp32", "onnxruntime": "ONNX Runtime, fp32",
                  "onnxruntime int8": "ONNX Runtime, int8 (static, QDQ)"}


def quality_section(quality: dict | None) -> list[str]:
    """The latency model's own figures: a prediction is only as good as them."""
    lines = ["## How good the latency model is", ""]
    if not quality:
        return lines + ["The table records no check of its predictions (a table made "
                        "elsewhere, or before checks were kept): `proxyless latency-check "
                        "--table latency_table.json` measures one.", ""]
    for key, what in (("left_out", "its calibration networks, each predicted by a fit "
                                   "without it"),
                      ("kit_check", "the kit's check networks, timed on the device")):
        q = quality.get(key)
        if q:
            lines.append(f"- On {q['networks']} of {what}: MAPE {q['mape']:.1f}%, "
                         f"{q['within_10pct']:.0f}% within ±10%, Spearman "
                         f"{q['spearman']:.3f}" + ("" if q.get("used", True)
                                                   else " (the fit is not used)") + ".")
    weak = [q for q in quality.values() if q and q["within_10pct"] < 90]
    if weak:
        lines.append("- **Weak**: the predicted latency may be off by more than 10% for "
                     "some networks; `proxyless latency-check` measures fresh ones.")
    return lines + [""]


def runtimes_section(r: RunResult) -> list[str]:
    """What was priced, and the network measured in every runtime: the figures a user deploying
    it would pay, beside the one the search optimised."""
    p = r.priced or {}
    threads = f", {p['threads']} thread(s)" if "threads" in p else ""
    lines = ["## What the network costs where", "",
             f"The search priced **{p.get('runtime', 'n/a')}** latency (batch "
             f"{p.get('batch', 1)}{threads}, on {p.get('device', 'n/a')}): the latency table "
             "`latency_table.json`; `--profile-backend` chooses another runtime."]
    ms, setting = r.runtimes_ms, r.runtimes_setting
    if not ms or not setting:
        return lines + [""]
    priced_name = p.get("backend")
    fastest = min(v for v in ms.values() if v is not None)
    lines += ["", f"The retrained network measured now on {setting['machine']}, batch "
              f"{setting['batch']}, {setting['threads']} thread(s), every runtime timed together "
              "round-robin (exports: `retrain/model.onnx`, `retrain/model.int8.onnx`):", "",
              "| runtime | latency | vs fastest |", "| --- | ---: | ---: |"]
    for name, value in ms.items():
        label = RUNTIME_LABELS.get(name, name) + (" (priced)" if name == priced_name else "")
        cell = "n/a" if value is None else f"{value:.3f} ms"
        ratio = "" if value is None else f"x{value / fastest:.2f}"
        lines.append(f"| {label} | {cell} | {ratio} |")
    return lines + [""]


def _start(r: RunResult) -> str:
    return ("from the supernet's weights" if r.retrain_init == "supernet"
            else "from scratch")


def _search_paragraph(r: RunResult, scfg: SearchConfig) -> str:
    if r.retargeted_from:
        return (f"Re-targeted (`--from-search`): the trained supernet of "
                f"`{r.retargeted_from}`, its weights frozen, α from its final values, moved by "
                "architecture steps alone against this run's table and target; that search's "
                "settings are in its config.json.")
    return (f"Search: {scfg.strategy} strategy ({strategy_details(scfg)}), "
            f"{scfg.warmup_epochs} warm-up + {scfg.epochs} search epochs, "
            f"`{scfg.weight_sharing}` candidate weights, entropy weight (--decide) "
            f"{scfg.decide:g}, {weight_paths(scfg)} weight paths, target as a "
            f"`{scfg.constraint}` constraint.")


def write_report(out: Path, r: RunResult, scfg: SearchConfig, tcfg: TrainConfig,
                 space: SearchSpace) -> Path:
    arch_cell = r.arch.replace("|", "\\|")  # a bare | would split the table's cell
    measured = "n/a"
    if r.measured_ms is not None:
        measured = f"{r.measured_ms:.3f} ms"
        if r.measured_on_table_ms is not None:  # comparable with the target
            measured += f" ({r.measured_on_table_ms:.3f} ms at the table's speed)"
    lines = [
        f"# proxyless run: {space.name}",
        "",
        f"Searched on **{r.data}** ({r.search_train_images:,} training images for the "
        f"weights, {r.search_val_images:,} held out for α) for **{r.device}** ({r.threads} "
        f"thread(s), batch {r.batch}, {r.backend or 'torch'}), latency target "
        f"**{r.target_ms} ms**. The derived network was retrained on all "
        f"{r.train_images:,} training images ({_start(r)}, dropout "
        f"{tcfg.dropout:g}) and tested on {r.test_images:,}.",
        "",
        "| result | value |",
        "| --- | --- |",
        f"| architecture | `{arch_cell}` |",
        f"| test top-1 (retrained {tcfg.epochs} epochs) | {r.test_top1:.2f}% |",
        f"| latency: target / predicted / measured | {r.target_ms} ms / "
        f"{r.predicted_ms:.3f} ms / {measured} |",
        f"| parameters | {r.params / 1e6:.3f}M |",
        f"| multiply-adds | {r.macs / 1e6:.2f}M |",
        f"| search: argmax validation top-1 | {r.search_val_top1:.2f}% |",
        f"| budget | `{r.budget}` |",
        f"| search time / retrain time | {r.search_time_s:.0f} s / "
        f"{r.retrain_time_s:.0f} s |",
        "",
        *quality_section(r.latency_model),
        *runtimes_section(r),
        "## The derived architecture",
        "",
        "![architecture](search/arch.png)",
        "",
        "## How the architecture probabilities evolved",
        "",
        "![probabilities](search/probs.png)",
        "",
        "## Retraining",
        "",
        "![retraining](retrain.png)",
        "",
        _search_paragraph(r, scfg) + " Files: `search/` (arch.json, "
        "summary.json, metrics.jsonl), `retrain/` (final.json, metrics.jsonl, model.pt), "
        "`latency_table.json`, `results.json`.",
        "",
    ]
    path = out / "report.md"
    text = "\n".join(lines)
    replace_atomically(path, lambda f: f.write(text.encode("utf-8")))
    return path
