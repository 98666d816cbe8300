"""The configuration reference, `docs/configuration.md`, generated from the config dataclasses:
every setting with its type, default, the values it may take, command-line option and one line
of help, declared once with `config_io.setting`. A test keeps the file current and every field
documented.

    .venv/bin/python -m proxyless.cli.reference > docs/configuration.md
"""

from __future__ import annotations

import dataclasses
import sys

from proxyless.config_io import declared_range, setting_option
from proxyless.engine.runtime import RuntimeConfig
from proxyless.latency.profile import ProfileSetting
from proxyless.pipeline.run import RunConfig
from proxyless.search.config import SearchConfig
from proxyless.training.trainer import TrainConfig

# (the config class, its title, the commands whose options set it, what the section is)
SECTIONS = (
    (RuntimeConfig, "runtime", ("train", "search", "run"),
     "Where and how a job runs; shared by the search and the training. All but the seed may "
     "change when a run resumes."),
    (SearchConfig, "search", ("search", "run"),
     "The architecture search: schedule, architecture optimiser, loss and constraint, "
     "REINFORCE (`SearchConfig`, saved in the search folder's `config.json`)."),
    (TrainConfig, "train", ("train", "run"),
     "Training a network from scratch: `train`, and `run`'s retraining, whose settings come "
     "from `--budget` (`TrainConfig`)."),
    (ProfileSetting, "latency profile", ("profile", "search", "run"),
     "How a device's latency is profiled: `profile`'s options; `search` and `run` take "
     "`--profile-backend`, `--profile-batch`, `--profile-threads` and `--profile-min-time` "
     "for the table they profile (or take from the cache) without `--table`."),
    (RunConfig, "run", ("run",),
     "The whole job (`RunConfig`, written to the run folder's `run_config.json`)."),
)


def section_fields(cls: type) -> list[dataclasses.Field]:
    """The fields a section declares itself: not those of `RuntimeConfig` (its own section)
    and not nested configs (their own sections)."""
    shared = set() if cls is RuntimeConfig else {f.name for f in dataclasses.fields(RuntimeConfig)}
    return [f for f in dataclasses.fields(cls)
            if f.name not in shared and f.default is not dataclasses.MISSING]


def _default(field: dataclasses.Field) -> str:
    value = field.default
    return "null" if value is None else str(value).lower() if isinstance(value, bool) \
        else f"`{value}`"


def reference() -> str:
    lines = ["# Configuration reference", "",
             "Every setting of the jobs, generated from the config dataclasses "
             "(`python -m proxyless.cli.reference`; do not edit by hand). A setting has one "
             "name: `--arch-lr` on the command line is `arch_lr` in a `config.yaml` "
             "(`--config`, `--print-config`) and in the run folder's `config.json`; a switch "
             "that is on by default also takes `--no-...`. Two exceptions: `search` and `run` "
             "give the latency profile's settings with the prefix `--profile-` (`run_config.json` "
             "nests them under `profile`), and `--target-ms` / `--target-mflops` set `metric` and "
             "`target` together. *Library only* settings are set from Python.", ""]
    for cls, title, commands, about in SECTIONS:
        lines += [f"## {title}", "", f"{about} Commands: {', '.join(commands)}.", "",
                  "| setting | type | default | values | option | what it is |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for field in section_fields(cls):
            option = setting_option(field)
            shown = f"`{option}`" if option else "*library only*"
            if option and field.default is True:
                shown += f", `--no-{option[2:]}`"
            help_text = field.metadata.get("help", "").replace("|", "\\|")
            kind = str(field.type).replace("|", "\\|")  # a table cell's own bar
            values = declared_range(field) or ""
            lines.append(f"| `{field.name}` | `{kind}` | {_default(field)} | {values} | "
                         f"{shown} | {help_text} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    sys.stdout.write(reference())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
