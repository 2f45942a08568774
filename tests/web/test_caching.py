"""Public PKI answers are the same for everyone: no cookie, no `Vary: Cookie`, cacheable."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.auth.flows import login
from tests.conftest import MakeUser


@pytest.mark.parametrize(
    "path", ["/pki/ca/root.crt", "/pki/ca/employer.pem", "/pki/crl/employer.crl"]
)
def test_public_pki_responses_do_not_vary_on_cookies(
    client: FlaskClient, make_user: MakeUser, path: str
) -> None:
    # Even for a signed-in browser that sends its session cookie.
    user, password = make_user()
    login(client, user.username, password)
    assert client.get("/auth/home").status_code == 200
    response = client.get(path)
    assert response.status_code == 200
    assert "Cookie" not in response.vary
    assert "Set-Cookie" not in response.headers
    assert response.cache_control.public or response.cache_control.max_age


def test_pages_still_vary_on_cookies(client: FlaskClient) -> None:
    response = client.get("/auth/login")
    assert "Cookie" in response.vary
