"""Reuse the officer fixture of the sign-in tests."""

from tests.auth.conftest import make_officer

__all__ = ["make_officer"]
