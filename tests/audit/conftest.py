"""Fixtures of the audit tests, on top of the shared ``app`` and ``cli``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from ca_service.audit.service import record_event, sign_checkpoint
from ca_service.db import db
from ca_service.hsm_access import app_token

EVENTS = 12
SIGNED_AT = 8

MakeApp = Callable[..., Flask]


@pytest.fixture
def chain(app: Flask) -> Flask:
    """A log of EVENTS events with a checkpoint signed at event SIGNED_AT."""
    with app.app_context():
        for n in range(1, EVENTS + 1):
            record_event("tests", "test.event", f"t{n}", {"n": n})
            if n == SIGNED_AT:
                sign_checkpoint(app_token())
        db.session.commit()
    return app


@pytest.fixture
def make_app(app: Flask, app_overrides: dict[str, Any]) -> Iterator[MakeApp]:
    """Another app on the same database and token with some settings changed.

    Depends on ``app`` so the shared clean-up runs after the test.
    """
    made: list[Flask] = []

    def make(**settings: Any) -> Flask:
        from ca_service.app import create_app

        other = create_app({**app_overrides, **settings})
        made.append(other)
        return other

    yield make
    for other in made:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
