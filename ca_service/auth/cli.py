"""`ca-service user ...`: create, list, reset and disable accounts."""

from __future__ import annotations

import datetime as dt

import click
import sqlalchemy as sa
from flask import current_app

from ca_service.auth import service
from ca_service.auth.models import Role, User
from ca_service.cli_support import app_command, echo_table
from ca_service.db import db, utcnow
from ca_service.extensions import settings_of

ACTOR = "cli"


def _hours() -> int:
    return int(settings_of(current_app)["ONE_TIME_PASSWORD_HOURS"])


def _state(user: User, now: dt.datetime) -> str:
    if user.disabled:
        return "disabled"
    if user.locked_until is not None and user.locked_until > now:
        return f"locked until {user.locked_until:%Y-%m-%d %H:%M} UTC"
    if user.password_is_temporary:
        return "must set password"
    return "active"


@click.group("user")
def user_cli() -> None:
    """Accounts."""


@user_cli.command("create")
@click.option("--username", required=True)
@click.option("--email", required=True)
@click.option("--full-name", required=True)
# HR operators are made by their employer's administrator (the operators page), never here:
# an operator without an employer would have no mobile number for its sign-in code.
@click.option(
    "--role",
    required=True,
    type=click.Choice([r.value for r in Role if r is not Role.EMPLOYER_OPERATOR]),
)
@app_command
def create(username: str, email: str, full_name: str, role: str) -> None:
    """Create an account; prints its one-time password once (it is stored only as a hash)."""
    hours = _hours()
    user, one_time_password = service.create_user(
        actor=ACTOR,
        username=username,
        email=email,
        full_name=full_name,
        role=Role(role),
        one_time_password_hours=hours,
    )
    click.echo(f"created {user.role.value} {user.username}")
    click.echo(f"one-time password (valid {hours} h, shown once): {one_time_password}")


@user_cli.command("reset")
@click.argument("username")
@click.option(
    "--remove-totp",
    is_flag=True,
    help="Also remove the enrolled authenticator (lost phone); the user enrols a new one.",
)
@app_command
def reset(username: str, remove_totp: bool) -> None:
    """New one-time password; also unlocks the account and ends its sessions."""
    hours = _hours()
    one_time_password = service.reset_password(
        actor=ACTOR, username=username, one_time_password_hours=hours, remove_totp=remove_totp
    )
    click.echo(
        f"one-time password for {username} (valid {hours} h, shown once): {one_time_password}"
    )


@user_cli.command("disable")
@click.argument("username")
@app_command
def disable(username: str) -> None:
    """Disable an account and end its sessions."""
    service.set_disabled(actor=ACTOR, username=username, disabled=True)
    click.echo(f"disabled {username}")


@user_cli.command("enable")
@click.argument("username")
@app_command
def enable(username: str) -> None:
    """Enable a disabled account again."""
    service.set_disabled(actor=ACTOR, username=username, disabled=False)
    click.echo(f"enabled {username}")


@user_cli.command("list")
@app_command
def list_users() -> None:
    """List accounts."""
    now = utcnow()
    rows = [
        {
            "username": u.username,
            "role": u.role.value,
            "state": _state(u, now),
            "totp": "yes" if u.totp_enabled_at else "no",
            "last_login": f"{u.last_login_at:%Y-%m-%d %H:%M}" if u.last_login_at else "",
        }
        for u in db.session.scalars(sa.select(User).order_by(User.username))
    ]
    echo_table(rows, ["username", "role", "state", "totp", "last_login"])
