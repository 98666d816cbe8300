"""Re-targeting: a finished search's trained supernet, its weights frozen, searched again by
architecture steps alone against another cost model (device, runtime, batch) or target.

    >>> searched = finished_search("runs/a/search")
    >>> config = retarget_config(searched.config, target=0.3)
    >>> result = retarget(searched, data, cost_model, config, "runs/a-0.3ms")

The weight steps are what makes a search expensive; they do not depend on the target (but for
which paths p samples), so one supernet serves many targets, as once-for-all's does. α starts
from the search's final α (`start="final"`) or uniform, and moves as in the search's own
architecture steps (the same strategy, losses, constraint, two-sided target and estimators,
REINFORCE too) on the same validation split, with the search's schedule of α steps: each
epoch takes as many as a search epoch took (one per `arch_every` training batches), with the
same evaluation of the argmax network on the supernet's weights at its end. The folder it
writes is a search folder (checkpoint with the supernet, metrics.jsonl, config.json, then
`write_search_outputs`'s files), so `run --retrain-init supernet`, `compare` and another
re-targeting take it as they take a search's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from proxyless.config_io import to_dict
from proxyless.data import DataSplits, check_class_count, shutdown_workers
from proxyless.engine import epochs as skeleton
from proxyless.engine.divergence import at_batch
from proxyless.engine.run_lock import hold_run_folder
from proxyless.engine.runtime import first_line, load_checkpoint, start_run
from proxyless.engine.tensorboard_log import RunBoard
from proxyless.engine.training_speed import describe, earlier_speed
from proxyless.errors import ProxylessError
from proxyless.latency.cache import cached_table
from proxyless.latency.cost import CostModel
from proxyless.latency.profile import ProfileSetting
from proxyless.latency.table import LatencyTable
from proxyless.model.space import SearchSpace
from proxyless.model.supernet import SuperNet
from proxyless.search.checks import check_inputs
from proxyless.search.config import SearchConfig
from proxyless.search.costs import search_costs
from proxyless.search.loop import (
    CHECKPOINT,
    SearchEpoch,
    SearchResult,
    derive_within_target,
    make_strategy,
    require_finite_alpha,
    search_precision,
)
from proxyless.search.outputs import (
    SUMMARY_FILE,
    SearchSummary,
    supernet_from_state,
    write_search_outputs,
)
from proxyless.search.reinforce import Objective, ReinforceStrategy
from proxyless.search.step_batches import SearchBatches

ALPHA_STARTS = ("final", "uniform")
# settings a re-targeting may change: what the architecture steps do and against what; the
# rest (the supernet's weights, sharing, data split, batch) is the search's
RETARGET_SETTINGS = ("strategy", "loss", "estimator", "constraint", "dual_lr", "target_floor",
                     "arch_lr", "arch_every", "decide", "zero_alpha", "reinforce_samples",
                     "reward", "reward_w", "measure_latency", "epochs", "metric", "target")


@dataclass
class FinishedSearch:
    """What a finished search folder holds for a re-targeting: its supernet (the weights of
    every candidate, and the final α), its settings and its data's preparation."""

    folder: Path
    supernet: SuperNet
    config: SearchConfig
    transform: dict
    retargeted: bool = False  # the folder is a re-targeting's: its epochs are all α epochs

    @property
    def space(self) -> SearchSpace:
        return self.supernet.space


def finished_search(search_dir: str | Path) -> FinishedSearch:
    """The supernet and settings of a finished search (or re-targeting) folder, or a one-line
    error: no such folder, a search still running or stopped, a damaged checkpoint."""
    folder = Path(search_dir).resolve()  # recorded as its source: the same from anywhere
    if not folder.is_dir():
        raise ProxylessError(f"{folder}: no such search folder (a `proxyless search --out` "
                             "folder, or a `proxyless run` folder's search/)")
    if (folder / "search").is_dir() and not (folder / CHECKPOINT).exists():
        folder = folder / "search"  # a run folder: its search
    if not (folder / SUMMARY_FILE).exists():
        raise ProxylessError(f"{folder} holds no finished search (no {SUMMARY_FILE}); finish "
                             "it first: the command that made it, plus --resume")
    advice = "re-target a finished search folder, or search again"
    path = folder / CHECKPOINT
    state = load_checkpoint(path, "search checkpoint", advice)
    net = supernet_from_state(state, path, advice)
    try:
        config = SearchConfig.from_dict(state["config"])
        transform = dict(state.get("data", {}).get("transform", {}))
    except (KeyError, TypeError, AttributeError, RuntimeError, ProxylessError) as err:
        raise ProxylessError(f"{path} holds no supernet with its settings "
                             f"({first_line(err)}); {advice}") from None
    return FinishedSearch(folder, net, config, transform, "retarget" in state)


def retarget_config(searched: SearchConfig, retargeted: bool = False,
                    **changes) -> SearchConfig:
    """The re-targeting's settings: the search's, no warm-up, as many epochs of α steps as
    the search had (`epochs` - 1: none in its first; all of a re-targeting's, `retargeted`),
    and `changes` (RETARGET_SETTINGS and the runtime's: device, threads, precision, ...)."""
    refused = sorted(set(changes) - set(RETARGET_SETTINGS) - set(SearchConfig.RESUMABLE)
                     - {"seed"})
    if refused:
        raise ProxylessError(f"a re-targeting keeps the search's {', '.join(refused)}: its "
                             "supernet was trained with them")
    epochs = searched.epochs if retargeted else searched.epochs - 1
    config = replace(searched, warmup_epochs=0, epochs=max(2, epochs))
    return replace(config, **{k: v for k, v in changes.items() if v is not None})


def retarget(searched: FinishedSearch, data: DataSplits, cost_model: CostModel | None,
             config: SearchConfig, out_dir: str | Path, start: str = "final",
             resume: bool = False, progress: bool = True, log: Callable[[str], None] = print,
             latency_fn: Objective | None = None, also_log: Sequence[CostModel] = (),
             data_options: dict | None = None) -> SearchResult:
    """Architecture steps alone on `searched`'s supernet (a copy: `searched` stays as it is)
    under `config` (`retarget_config`), α starting from `start` (final or uniform); writes a
    search folder's checkpoint, metrics.jsonl and config.json (with `data_options`: where
    the data came from, for a re-targeting of this folder) into `out_dir`."""
    config.validate()
    if start not in ALPHA_STARTS:
        raise ProxylessError(f"--from {start!r}: expected one of {', '.join(ALPHA_STARTS)}")
    space = searched.space
    check_class_count(data.train, space.num_classes, f"data {data.name!r}",
                      f"the supernet of {searched.folder}")
    check_inputs(space, data, cost_model, config, latency_fn)
    if data.transform != searched.transform and searched.transform:
        raise ProxylessError(f"the data is prepared otherwise ({data.transform}) than the "
                             f"search of {searched.folder} had it ({searched.transform}); "
                             "give its --data-mode and --crop-scale")
    with hold_run_folder(out_dir, True):
        try:
            return _retarget(searched, data, cost_model, config, Path(out_dir), start, resume,
                             progress, log, latency_fn, also_log, data_options or {})
        finally:
            shutdown_workers()


def _retarget(searched: FinishedSearch, data: DataSplits, cost_model: CostModel | None,
              config: SearchConfig, out: Path, start: str, resume: bool, progress: bool,
              log: Callable[[str], None], latency_fn: Objective | None,
              also_log: Sequence[CostModel], data_options: dict) -> SearchResult:
    run = start_run(out, config.device, config.threads, resume, "retarget", CHECKPOINT)
    if run.dist.enabled:
        raise ProxylessError("retarget runs in one process: its architecture steps take "
                             "minutes; run it without torchrun")
    torch.manual_seed(config.seed)
    space = searched.space
    net = SuperNet(space, weight_sharing=config.weight_sharing)
    net.load_state_dict(searched.supernet.state_dict())
    if start == "uniform":
        with torch.no_grad():
            for alpha in net.arch_parameters():
                alpha.zero_()
    net = net.to(run.device, memory_format=torch.channels_last)
    batches = SearchBatches.build(space, data, config, run)
    precision, speed = search_precision(net, batches, config, run,
                                         earlier_speed(out) if resume else None)
    log(f"re-targeting in {describe(speed)}")
    strategy = make_strategy(net, cost_model, config, latency_fn, (), precision)
    latency_fn = strategy.latency_fn if isinstance(strategy, ReinforceStrategy) else None
    projection = cost_model if latency_fn is None else None
    cost_models = (cost_model, *also_log)
    steps = max(1, len(batches.train) // config.arch_every)
    board = RunBoard(out, steps, config.log_every, skeleton.sync_every(run.device),
                     enabled=config.tensorboard, log=log,
                     metrics=("epoch/val_top1", *(f"epoch/argmax_{m.name}"
                                                  for m in cost_models if m is not None)))
    one_epoch = RetargetEpoch(net, batches, None, None, strategy, config, cost_models,
                              run.device, progress, precision, projection, board)
    source = {"search": str(searched.folder), "from": start}
    epochs = skeleton.Epochs(run, out, "proxyless-retarget/1", config.epochs, config.seed,
                             state={"supernet": net, "strategy": strategy,
                                    "probs_history": one_epoch.probs_history},
                             saved={"space": space.to_dict(), "config": to_dict(config),
                                    "data": {"transform": data.transform},
                                    "retarget": source},
                             board=board, checkpoint_every=config.checkpoint_every,
                             batch_size=config.batch_size)
    epochs.start(resume, {"space": space.to_dict(), "search": to_dict(config),
                          "data": {"name": data.name, "source": data.source,
                                   "transform": data.transform, "options": data_options},
                          "retarget": source, "speed": speed},
                 lambda checkpoint: _check_resume(checkpoint, config, source, out), log)
    metrics = epochs.run(one_epoch, lambda r: retarget_line(r, config.epochs, cost_model),
                         "retarget", progress)
    return SearchResult(derive_within_target(net, projection, config), metrics,
                        one_epoch.probs_history, net)


def _check_resume(checkpoint: dict, config: SearchConfig, source: dict, out: Path) -> None:
    changed = skeleton.changed_settings(checkpoint, config, SearchConfig.RESUMABLE)
    if checkpoint.get("retarget") != source or changed:
        what = ", ".join(changed) or "the search or α start"
        raise ProxylessError(f"cannot resume {out} with other settings ({what}); give the "
                             "original ones or a new --out")


class RetargetEpoch(SearchEpoch):
    """One epoch of a re-targeting: the search epoch's architecture steps (one per
    `arch_every` training batches, each on a validation batch) without its weight steps."""

    def __call__(self, epoch: int, cursor: skeleton.EpochCursor | None = None) -> dict:
        config, val = self.config, self.batches.val
        cursor = cursor or skeleton.EpochCursor(None, epoch)
        steps = max(1, len(self.batches.train) // config.arch_every)
        gates = torch.Generator().manual_seed(config.seed * 7919 + epoch)
        val.set_epoch(epoch)
        self.net.train()
        arch_stats: list[dict] = []
        if cursor.restored is not None:
            arch_stats = list(cursor.restored["arch_stats"])
            gates.set_state(cursor.restored["gates"])
        val_stream = itertools.chain(val.iterate(len(arch_stats) % len(val)),
                                     itertools.chain.from_iterable(itertools.repeat(val)))

        def loop_state() -> dict:
            return {"arch_stats": arch_stats, "gates": gates.get_state()}

        bar = tqdm(range(cursor.start, steps), desc=f"retarget {epoch + 1}", unit="step",
                   leave=False, disable=not self.show, total=steps, initial=cursor.start)
        for i in bar:
            with at_batch(i, steps):
                xv, yv = next(val_stream)
                self.strategy.decide_weight = config.decide * self.search_progress(epoch, i)
                arch_stats.append(self.strategy.step(
                    xv.contiguous(memory_format=torch.channels_last), yv, gates))
                require_finite_alpha(self.net)
                self.log_arch_step(epoch * steps + i + 1, arch_stats[-1])
            cursor.step_done(i, steps, loop_state)
        return self.record(epoch, "retarget", None, arch_stats)

    def search_progress(self, epoch: int, batch: int) -> float:
        steps = max(1, len(self.batches.train) // self.config.arch_every)
        return min(1.0, (epoch + (batch + 1) / steps) / self.config.epochs)


def retarget_line(record: dict, total: int, cost_model: CostModel | None) -> str:
    line = (f"retarget {record['epoch']}/{total}  α loss {record.get('arch_loss', 0):.3f}"
            f"  val(argmax) {record['val_top1']:.1f}%  H(p) {record['entropy']:.2f}")
    if cost_model is not None:
        name, unit = cost_model.name, cost_model.unit
        line += (f"  E[{name}] {record[f'expected_{name}']:.3f}{unit}"
                 f"  argmax {record[f'argmax_{name}']:.3f}{unit}")
    return line + f"  ({record['epoch_time_s']:.0f}s)"


def retarget_job(searched: FinishedSearch, data: DataSplits, config: SearchConfig,
                 out: str | Path, table: LatencyTable | None = None,
                 profile: ProfileSetting | None = None, start: str = "final",
                 resume: bool = False, progress: bool = True,
                 log: Callable[[str], None] = print,
                 data_options: dict | None = None) -> SearchSummary:
    """Re-target `searched` into the folder `out`, priced by `table` (or, for a latency
    target without one, this device's table profiled as `profile` says; cached), then the
    search's outputs: arch.json, summary.json (predicted and, on this machine's table,
    measured latency), probs.png, arch.png. A resumed folder whose summary.json is written
    is finished: its summary is read back."""
    out = Path(out)
    if resume and (out / SUMMARY_FILE).exists():
        _check_resume(load_checkpoint(out / CHECKPOINT), config,
                      {"search": str(searched.folder), "from": start}, out)
        log(f"{out}: re-targeted before")
        return SearchSummary.read(out / SUMMARY_FILE)
    if table is None and config.metric == "latency" and config.target is not None:
        table, _ = cached_table(searched.space,
                                profile or ProfileSetting(device=config.device), progress, log)
    resume = resume and (out / CHECKPOINT).exists()  # --resume: the targets not begun start
    costs = search_costs(searched.space, config, table, log=log)
    result = retarget(searched, data, costs.constrained, config, out, start, resume=resume,
                      progress=progress, log=log, latency_fn=costs.measured,
                      also_log=costs.also_log, data_options=data_options)
    return write_search_outputs(result, out, config, costs.latency, table, log,
                                retargeted={"search": str(searched.folder), "from": start})
