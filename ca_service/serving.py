"""Run the app under gunicorn from `ca-service serve`."""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from ca_service.app import create_app


class _Gunicorn(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type information
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        # Each worker builds its own app after the fork: its own database pool and, lazily,
        # its own PKCS#11 library initialisation and sessions (hsm.Token checks the PID too).
        return create_app()


def run_gunicorn(*, host: str, port: int, workers: int, threads: int) -> None:
    """Validate the configuration once, then serve with ``workers`` forked processes."""
    create_app()  # fail fast in the master with a clear message, before forking
    _Gunicorn(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "accesslog": "-",
            "timeout": 60,
        }
    ).run()
