"""Both command-line tools end a failure in one `error: …` line, as the README says, for
click's own errors too (a wrong option, a missing argument)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from ca_client.cli import main as client_main
from ca_service.cli import main as service_main


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        (service_main, ["serve", "--no-such-option"], "No such option '--no-such-option'"),
        (service_main, ["no-such-command"], "No such command 'no-such-command'"),
        (client_main, ["--no-such-option"], "No such option '--no-such-option'"),
    ],
    ids=["ca-service-option", "ca-service-command", "ca-client-option"],
)
def test_click_errors_print_a_lowercase_error_line(
    command: click.Group, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 2, result.output
    assert "Error:" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "for help." in result.stderr  # the usage hint stays


def test_help_still_exits_zero() -> None:
    result = CliRunner().invoke(service_main, ["--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_an_exit_code_given_to_ctx_exit_is_kept() -> None:
    from ca_service.click_errors import OneLineErrors

    @click.group(cls=OneLineErrors)
    def tool() -> None:
        pass

    @tool.command()
    @click.pass_context
    def later(ctx: click.Context) -> None:
        ctx.exit(3)

    @tool.command()
    def fine() -> None:
        pass

    assert CliRunner().invoke(tool, ["later"]).exit_code == 3
    assert CliRunner().invoke(tool, ["fine"]).exit_code == 0
