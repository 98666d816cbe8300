"""The `proxyless` command line: it parses and prints, the library decides.

    proxyless run [--out DIR]                       # profile, search, retrain, measure, report
    proxyless inspect ARCH_OR_SPACE [--json]
    proxyless train ARCH_FILE [--data NAME_OR_PATH] [--data-dir DIR] --epochs N --out DIR [--resume]
    proxyless profile --space SPACE --out TABLE [--backend torch|onnxruntime] [--threads N]
    proxyless latency-check --table TABLE --samples K [--json]
    proxyless search --space SPACE --table TABLE --target-ms T --out DIR [--resume]
    proxyless export MODEL_OR_RUN_DIR --format onnx|torchscript --out FILE [--int8]
    proxyless evaluate MODEL [--data NAME_OR_PATH]
    proxyless predict MODEL IMAGE... [--top K]     # classify image files as the run cropped
    proxyless compare RUN_DIR... [--out DIR]        # Pareto picture: top-1 vs latency, MACs
    proxyless cross-latency NETWORK... [--settings torch:b1:t1 ...] [--table TABLE]

One module per command or family of commands (`run.py`, `search.py`, `retarget.py`, `train.py`,
`latency.py`, `deploy.py`, `compare.py`, `inspect.py`), each an `add_*_parser` and its
`cmd_*` functions; `settings.py` makes the options of the config classes' settings from their
declarations and reads them back (no option is mapped to its field by hand); `options.py`
holds the option types and groups they share,
`config_file.py` the run folder's `config.yaml` (`--config`, `--print-config`),
`reference.py` the configuration reference (docs/configuration.md) from the config classes,
`warning_lines.py` shows warnings as plain lines, once each, and `__main__.py` makes
`python -m proxyless.cli` the command. Every failure
caused by input is printed as one `proxyless: error: ...` line (exit code 2); an interrupted
run keeps its last checkpoint and says how to resume (exit code 130); SIGTERM or SIGUSR1 (a
cluster preempting the job) stops `train`, `search` and `run` after the current batch with a
checkpoint, says how to resume, and exits with code 75 (`stopping.EXIT_STOPPED`); `profile`
stops at once, keeping the layers it has timed.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

from proxyless.cli.compare import add_compare_parser, cmd_compare
from proxyless.cli.config_file import apply_config
from proxyless.cli.deploy import (
    add_evaluate_parser,
    add_export_parser,
    add_predict_parser,
    cmd_evaluate,
    cmd_export,
    cmd_predict,
)
from proxyless.cli.inspect import add_inspect_parser, cmd_inspect
from proxyless.cli.latency import (
    add_cross_latency_parser,
    add_latency_parsers,
    cmd_cross_latency,
    cmd_latency_check,
    cmd_profile,
)
from proxyless.cli.retarget import add_retarget_parser, cmd_retarget
from proxyless.cli.run import add_run_parser, cmd_run
from proxyless.cli.search import add_search_parser, cmd_search
from proxyless.cli.train import add_train_parser, cmd_train
from proxyless.cli.warning_lines import warning_lines
from proxyless.data import shutdown_workers
from proxyless.engine import distributed, stopping
from proxyless.errors import ProxylessError
from proxyless.files import no_room_cause

COMMANDS = {"inspect": cmd_inspect, "train": cmd_train, "profile": cmd_profile,
            "latency-check": cmd_latency_check, "search": cmd_search, "run": cmd_run,
            "export": cmd_export, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "compare": cmd_compare, "retarget": cmd_retarget,
            "cross-latency": cmd_cross_latency}
# commands that continue an interrupted run with --resume
RESUMABLE = {"train", "search", "run", "retarget"}
# commands that SIGTERM/SIGUSR1 stop at a safe point (exit code 75); a profile goes on from
# its saved layers when the same command runs again
STOPPABLE = RESUMABLE | {"profile"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proxyless",
        description="Hardware-aware neural architecture search, the ProxylessNAS way.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_inspect_parser(sub)
    add_train_parser(sub)
    add_latency_parsers(sub)
    add_search_parser(sub)
    add_retarget_parser(sub)
    add_run_parser(sub)
    add_export_parser(sub)
    add_evaluate_parser(sub)
    add_predict_parser(sub)
    add_compare_parser(sub)
    add_cross_latency_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args = apply_config(parser, argv, args)
        with (warning_lines(),
              stopping.stop_signals() if args.command in STOPPABLE else nullcontext()):
            code = COMMANDS[args.command](args)
        distributed.finish()  # not on errors: the other ranks may never arrive
        return code
    except stopping.Stopped as err:  # SIGTERM/SIGUSR1: checkpointed, ready to be requeued
        out = Path(args.out or getattr(args, "kit", None) or ".")
        if args.command == "profile":
            hint = (f"run the same command again: it goes on from what {out} holds"
                    if out.exists() else "nothing was saved yet: run the same command again")
        elif args.command in ("run", "retarget") or (out / "checkpoint.pt").exists():
            hint = f"to continue, run the same command plus --resume (run folder {out})"
        else:  # stopped before a train or search wrote its first checkpoint
            hint = "nothing was checkpointed yet: run the same command again, without --resume"
        print(f"proxyless: {err}; {hint}", file=sys.stderr)
        return err.exit_code
    except ProxylessError as err:
        print(f"proxyless: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `proxyless inspect ... | head`
        sys.stderr.close()
        return 0
    except Exception as err:
        cause = no_room_cause(err)
        if cause is None:
            raise
        # a write no proxyless code wraps (a library's): still one line, and what to do
        where = f" writing {cause.filename}" if cause.filename else ""
        print(f"proxyless: error: no space left{where} ({cause.strerror}); free some space (or "
              "raise the file-size limit) and run the command again"
              + (" with --resume: it goes on from the last checkpoint"
                 if args.command in RESUMABLE else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        hint = (f"; continue with the same command plus --resume (run folder {out})"
                if out and args.command in RESUMABLE else "")
        print(f"proxyless: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        shutdown_workers()  # a stream's decoding processes, which ignore SIGTERM
        distributed.teardown()
