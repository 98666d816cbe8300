"""The configuration reference: every setting of the config tree has one line of help, its
option exists on the command line of the commands that take its section, and
docs/configuration.md is the reference as generated now."""

import argparse
from pathlib import Path

from proxyless.cli import build_parser
from proxyless.cli.reference import SECTIONS, reference, section_fields
from proxyless.config_io import setting_option

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def _options(command: str) -> set[str]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {s for a in commands.choices[command]._actions for s in a.option_strings}


def test_every_setting_has_one_line_of_help():
    missing = [f"{cls.__name__}.{f.name}" for cls, *_ in SECTIONS for f in section_fields(cls)
               if not f.metadata.get("help", "").strip() or "\n" in f.metadata["help"]]
    assert missing == []


def test_every_option_named_exists_on_a_command_of_its_section():
    wrong = []
    for cls, _, commands, _ in SECTIONS:
        offered = set().union(*(_options(c) for c in commands))
        for field in section_fields(cls):
            option = setting_option(field)
            names = [o.strip() for o in option.split("/")] if option else []
            wrong += [f"{cls.__name__}.{field.name}: {name}" for name in names
                      if name not in offered]
    assert wrong == []


def test_the_reference_file_is_current():
    assert DOC.read_text() == reference(), \
        "regenerate it: .venv/bin/python -m proxyless.cli.reference > docs/configuration.md"
