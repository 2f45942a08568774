"""What every `ca-service` command shares: building the app and the command's commit boundary."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import click
import sqlalchemy as sa
from flask import Flask

from ca_service.config import Settings, load_settings
from ca_service.errors import CAError
from hsm.errors import HSMError

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 1) -> None:
    """Print a one-line error and exit non-zero (no traceback for an operator)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def operator_errors() -> Iterator[None]:
    """Turn the errors an operator can act on into one line and a non-zero exit."""
    try:
        yield
    except CAError as exc:
        fail(exc.message)
    except HSMError as exc:
        fail(str(exc))
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "unreachable"
        fail(f"the database is unavailable: {reason}")


def _overrides() -> dict[str, Any] | None:
    # Tests pass settings through click's context object instead of the environment.
    obj = click.get_current_context().find_object(dict)
    overrides: dict[str, Any] | None = (obj or {}).get("overrides")
    return overrides


def load_command_settings() -> Settings:
    """Settings for a command that runs before an app can be built (`init`, `db upgrade`)."""
    return load_settings(overrides=_overrides())


def build_app() -> Flask:
    """The app from the environment's settings (`CA_*`)."""
    from ca_service.app import create_app

    return create_app(_overrides())


def app_command(func: Callable[P, R]) -> Callable[P, R]:
    """Run a command inside an app context; commit when it returns, roll back when it fails.

    This is the command's single transaction boundary: services only flush.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from ca_service.db import db

        with operator_errors():
            app = build_app()
            with app.app_context():
                try:
                    result = func(*args, **kwargs)
                    db.session.commit()
                    return result
                except BaseException:
                    db.session.rollback()
                    raise
                finally:
                    db.session.remove()
                    db.engine.dispose()

    return wrapper


def echo_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print rows as aligned columns."""
    widths = {c: max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))
