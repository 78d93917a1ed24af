"""The docs list every setting and every ippctl command the code has."""

from __future__ import annotations

import argparse
from dataclasses import fields

from shared.core.settings import Settings
from shared.ctl.main import build_parser
from sim.settings import StandIns
from tests.helpers import ROOT


def _commands(parser: argparse.ArgumentParser, prefix: str = "ippctl") -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, f"{prefix} {name}") or [f"{prefix} {name}"]
    return found


def test_every_setting_is_documented():
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [f.name for f in fields(Settings) if f"`{f.name}`" not in text]
    assert missing == []
    knobs = text[text.index("## The stand-ins") :]
    assert [f.name for f in fields(StandIns) if f"`{f.name}`" not in knobs] == []


def test_every_ippctl_command_is_documented():
    text = (ROOT / "docs" / "ippctl.md").read_text()
    commands = _commands(build_parser())
    assert len(commands) > 10
    assert [c for c in commands if f"`{c}" not in text] == []


def test_the_readme_gives_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
