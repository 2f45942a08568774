"""`ca-service serve`'s default thread count, and the database pool that must hold it."""

from __future__ import annotations

import click

from ca_service.cli import SERVE_THREADS, serve
from ca_service.db import engine_options


def _default(command: click.Command, name: str) -> object:
    (option,) = [param for param in command.params if param.name == name]
    return option.default


def test_serve_runs_eight_app_threads_per_worker_by_default() -> None:
    # bench/renewal.py: with 8 threads a worker's renewal batch gathers more renewals per
    # commit than with 4, for less server CPU per renewal.
    assert SERVE_THREADS == 8
    assert _default(serve, "threads") == SERVE_THREADS


def test_postgresql_pool_holds_every_app_thread_and_the_renewal_batch() -> None:
    # A thread that finds the pool empty waits (pool_timeout) and then fails its request.
    options = engine_options("postgresql+psycopg://ca@127.0.0.1/ca")
    assert options["pool_size"] + options["max_overflow"] >= SERVE_THREADS + 1
