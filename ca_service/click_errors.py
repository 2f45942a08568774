"""The command groups of `ca-service` and `ca-client`: click's own errors (a wrong option, a
missing file, ``ClickException``) end in the same one-line ``error: …`` as ours."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click


class OneLineErrors(click.Group):
    """A click group whose errors print ``error: <message>`` (click prints ``Error:``)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:  # --help
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            _show(exc)
        # Outside standalone mode click answers ``ctx.exit(n)`` by returning n; commands
        # themselves return None (tests/test_cli_errors.py checks both).
        sys.exit(result if isinstance(result, int) else 0)


def _show(exc: click.ClickException) -> NoReturn:
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        click.echo(exc.ctx.get_usage(), err=True)
        command = exc.ctx.command_path
        click.echo(f"Try '{command} {exc.ctx.help_option_names[0]}' for help.", err=True)
    click.echo(f"error: {exc.format_message()}", err=True)
    sys.exit(exc.exit_code)
