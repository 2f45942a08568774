"""Public read paths (CRL, OCSP from storage, /verify) do not queue behind a writer on SQLite:
their transactions begin DEFERRED, while everything else begins IMMEDIATE."""

from __future__ import annotations

import sqlite3
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient


def test_crl_is_served_while_another_connection_holds_the_write_lock(
    app: Flask, client: FlaskClient, app_overrides: dict[str, object]
) -> None:
    url = str(app_overrides["DATABASE_URL"])
    if not url.startswith("sqlite:///"):
        pytest.skip("PostgreSQL reads never wait for writers")
    writer = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=1)
    try:
        writer.execute("BEGIN IMMEDIATE")  # holds the write lock, as a long issuance would
        started = time.monotonic()
        response = client.get("/pki/crl/employer.crl")
        assert response.status_code == 200
        assert time.monotonic() - started < 2  # no wait for the 15-second busy timeout
    finally:
        writer.execute("ROLLBACK")
        writer.close()
