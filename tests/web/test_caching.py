"""Public PKI answers are the same for everyone: no cookie, no `Vary: Cookie`, cacheable; the
session cookie and `Vary: Cookie` elsewhere are Flask's."""

from __future__ import annotations

import pytest
from flask import Flask, Response, request
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.auth.flows import csrf_token, login, post_form
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


class _FlasksOwn(SecureCookieSessionInterface):
    """Flask's session interface as it comes, but for the stateless views (as ours)."""

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        view = app.view_functions.get(request.endpoint or "")
        if not getattr(view, "stateless", False):
            super().save_session(app, session, response)


def _cookie_story(app: Flask, user: str, password: str) -> list[tuple[object, ...]]:
    """What each step of a browser's and an API client's visit says about cookies."""
    client = app.test_client()
    steps = []

    def note(response: TestResponse) -> None:
        cookies = sorted(
            (c.split("=", 1)[0], "Expires=Thu, 01 Jan 1970" in c)  # (name, deleted)
            for c in response.headers.getlist("Set-Cookie")
        )
        steps.append((response.status_code, sorted(response.vary), cookies))

    note(client.get("/api/v1/certificates"))  # no cookie, no token: 401
    note(client.get("/api/v1/openapi.json"))  # stateless
    note(client.get("/auth/login"))  # a CSRF token: the session starts
    note(login(client, user, password))
    note(client.get("/auth/home"))
    note(post_form(client, "/auth/logout", {}, token_from="/auth/home"))
    client.set_cookie("session", "tampered.value.sig")
    note(client.get("/auth/home"))
    return steps


def test_the_session_interface_answers_as_flasks_own(app: Flask, make_user: MakeUser) -> None:
    # web._SessionInterface skips Flask's work for requests without a session cookie; the
    # cookies and Vary headers must stay exactly what Flask's own interface gives.
    user, password = make_user()
    ours = _cookie_story(app, user.username, password)
    app.session_interface = _FlasksOwn()
    assert _cookie_story(app, user.username, password) == ours
    assert ours[0] == (401, ["Cookie"], [])
    assert ours[1] == (200, [], [])
    assert ours[2][2] == [("session", False)]


def _signed_in_cookie(app: Flask, make_user: MakeUser) -> str:
    client = app.test_client()
    user, password = make_user()
    login(client, user.username, password)
    assert client.get("/auth/home").status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


@pytest.mark.parametrize(
    ("path", "destination"),
    [("/static/css/app.css", None), ("/auth/home", "iframe"), ("/auth/home", "image")],
)
def test_files_inside_a_page_do_not_put_an_older_session_back(
    app: Flask, make_user: MakeUser, path: str, destination: str | None
) -> None:
    # A file the page loads (a document's PDF in an iframe, the style sheet) can be answered
    # after the user's next POST: the sign-out below, or an approval's flash message. If its
    # answer refreshed the session cookie it would put back the one it was sent with.
    stale = _signed_in_cookie(app, make_user)
    loader = app.test_client()
    loader.set_cookie("session", stale)
    headers = {"Sec-Fetch-Dest": destination} if destination else {}
    with loader.get(path, headers=headers) as response:
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers
        if destination:
            assert "Cookie" in response.vary


@pytest.mark.parametrize("destination", [None, "document", "empty"])
def test_pages_and_fetches_still_refresh_the_session(
    app: Flask, make_user: MakeUser, destination: str | None
) -> None:
    # The sliding expiry (SESSION_HOURS) is kept by the page's own requests and by clients that
    # send no Fetch Metadata.
    loader = app.test_client()
    loader.set_cookie("session", _signed_in_cookie(app, make_user))
    headers = {"Sec-Fetch-Dest": destination} if destination else {}
    response = loader.get("/auth/home", headers=headers)
    assert response.status_code == 200
    assert [c.split("=", 1)[0] for c in response.headers.getlist("Set-Cookie")] == ["session"]


def test_a_frame_that_changes_the_session_still_saves_it(app: Flask, make_user: MakeUser) -> None:
    # Only refreshes are skipped: a sign-out posted from a frame still clears the cookie.
    loader = app.test_client()
    stale = _signed_in_cookie(app, make_user)
    loader.set_cookie("session", stale)
    token = csrf_token(loader, "/auth/home")
    response = loader.post(
        "/auth/logout", data={"csrf_token": token}, headers={"Sec-Fetch-Dest": "iframe"}
    )
    assert response.status_code in (302, 303)
    (written,) = response.headers.getlist("Set-Cookie")  # signed out, "You are signed out."
    assert written.startswith("session=")
    assert stale not in written
    assert loader.get("/auth/home").status_code in (302, 401)
