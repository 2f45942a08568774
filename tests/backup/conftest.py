"""Fixtures of the backup tests: certificates from the revocation tests, staff from auth."""

from __future__ import annotations

from tests.auth.conftest import make_officer  # noqa: F401  (fixture re-exported)
from tests.revocation.conftest import make_certificate  # noqa: F401  (fixture re-exported)
