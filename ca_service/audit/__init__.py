"""Hash-chained audit log with HSM-signed checkpoints."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Nothing to register for the web yet: auditors use `ca-service audit`."""
