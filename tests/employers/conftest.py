"""Fixtures of the employer tests, shared with the issuance tests (employers with a confirmed
mobile number, a trusted seal CA)."""

from tests.issuance.conftest import (  # noqa: F401  (fixtures re-exported)
    make_employer,
    seal_ca,
    trusted_seal_ca,
)
