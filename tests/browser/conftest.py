"""Fixtures of the browser tests: one headless Chromium per module, `ca-service serve --tls`
(threads worker, a client certificate asked for) for the module, and the officer fixture of the
sign-in tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.auth.conftest import make_officer
from tests.auth.tls_fixtures import Served, ServerTls, serve_process, server_tls
from tests.browser.support import ARGS, AXE, CHROMIUM
from tests.conftest import Baseline
from tests.issuance.conftest import seal_ca, trusted_seal_ca

__all__ = [
    "browser",
    "make_officer",
    "seal_ca",
    "server_tls",
    "tls_server",
    "trusted_seal_ca",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not AXE.is_file():
        pytest.fail(f"{AXE} missing: run `make setup` (npm ci in tests/browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def tls_server(
    app_overrides: dict[str, Any],
    pki_baseline: Baseline,
    server_tls: ServerTls,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """`ca-service serve --tls` with two workers; every certificate it issues is at once due
    for renewal (a window longer than its life), so the journey can renew in the browser."""
    log = tmp_path_factory.mktemp("tls-server") / "server.log"
    environ = {"CA_RENEWAL_WINDOW_DAYS": "400"}
    with serve_process(app_overrides, log, tls=server_tls, environ=environ, workers=2) as served:
        yield served
