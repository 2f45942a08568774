"""The sign-in, registration and officer pages in headless Chromium (Debian's, via Playwright)
against `ca-service serve`: no serious or critical axe-core finding, no sideways scrolling at
360 px, translated text in Spanish and Chinese, and screenshots at 1280 and 390 px in
var/screenshots/ (the employer's pages are checked on the journey, test_journey.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.auth.flows import Officer
from tests.browser.support import (
    BROWSER_LOCALE,
    HTML_LANG,
    SCREENSHOTS,
    PageChecks,
    Ui,
    officer_sign_in,
)

PUBLIC_PAGES = {"login": "/auth/login", "register": "/employers/register"}
OFFICER_PAGES = {"queue": "/officer/applications/", "account": "/auth/home"}


def test_main_pages_are_accessible_narrow_and_translated(
    served: str, browser: Any, make_officer: Callable[..., Officer]
) -> None:
    from playwright.sync_api import expect

    officer = make_officer()
    checks = PageChecks()
    # axe is injected as a script, which the CSP forbids: bypass it for these checks only.
    context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    for name, path in PUBLIC_PAGES.items():
        page.goto(f"{served}{path}")
        checks.check(page, name)
    officer_sign_in(page, served, officer, Ui("en"))
    for name, path in OFFICER_PAGES.items():
        page.goto(f"{served}{path}")
        checks.check(page, name)
    context.close()

    for language in ("es", "zh-Hans"):
        locale = BROWSER_LOCALE[language]
        lang = browser.new_context(locale=locale, extra_http_headers={"Accept-Language": locale})
        localised = lang.new_page()
        localised.goto(f"{served}/auth/login")
        expect(localised.get_by_role("heading", name=Ui(language)("Sign in"))).to_be_visible()
        expect(localised.locator("html")).to_have_attribute("lang", HTML_LANG[language])
        localised.screenshot(path=str(SCREENSHOTS / f"login-{language}.png"))
        lang.close()
    print(f"screenshots in {SCREENSHOTS}")
    assert not checks.found, "\n".join(checks.found)
