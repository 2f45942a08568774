"""The README is the user's manual: its settings table is `ca-service config show --markdown`,
and it names every `ca-service` and `ca-client` command."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

from ca_client.cli import main as client_main
from ca_service.cli import main as service_main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme_as_config_show_prints_it() -> None:
    shown = CliRunner().invoke(service_main, ["config", "show", "--markdown"])
    assert shown.exit_code == 0, shown.output
    rows = [line for line in shown.output.splitlines() if line.startswith("| `CA_")]
    assert rows
    missing = [row for row in rows if row not in README]
    assert not missing, "regenerate the README table with `ca-service config show --markdown`"


def _commands(group: click.Group, prefix: str) -> list[str]:
    names = []
    for name, command in group.commands.items():
        if command.hidden:
            continue
        if isinstance(command, click.Group):
            names += _commands(command, f"{prefix} {name}")
        else:
            names.append(f"{prefix} {name}")
    return names


def test_every_command_is_in_the_readme() -> None:
    commands = _commands(service_main, "ca-service") + _commands(client_main, "ca-client")
    # Named in code, with or without the program: "`ca-service user create …`", "`user list`".
    undocumented = [
        command
        for command in commands
        if not re.search(
            rf"`(?:{command.split(' ', 1)[0]} )?{re.escape(command.split(' ', 1)[1])}\b", README
        )
    ]
    assert not undocumented, undocumented
