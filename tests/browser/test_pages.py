"""The main pages in headless Chromium (Debian's, via Playwright) against `ca-service serve`:
no serious or critical axe-core finding, no sideways scrolling at 360 px, translated text in
Spanish and Chinese, and screenshots at 1280 and 390 px in var/screenshots/."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pyotp
import pytest

from tests.auth.flows import Officer

ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PUBLIC_PAGES = {"login": "/auth/login", "register": "/employers/register"}
OFFICER_PAGES = {"queue": "/officer/applications/", "account": "/auth/home"}


def _problems(page: object) -> list[str]:
    """Serious or critical axe-core violations of the page shown, one line each."""
    page.add_script_tag(path=str(AXE))  # type: ignore[attr-defined]
    result = page.evaluate("async () => await axe.run()")  # type: ignore[attr-defined]
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def _sideways(page: object) -> bool:
    return bool(
        page.evaluate(  # type: ignore[attr-defined]
            "() => document.scrollingElement.scrollWidth > window.innerWidth"
        )
    )


def _sign_in(page: object, served: str, officer: Officer) -> None:
    page.goto(f"{served}/auth/login")  # type: ignore[attr-defined]
    page.get_by_label("Username").fill(officer.user.username)  # type: ignore[attr-defined]
    page.get_by_label("Password").fill(officer.password)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Continue").click()  # type: ignore[attr-defined]
    page.get_by_label("Six-digit code").fill(pyotp.TOTP(officer.seed).now())  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]


def test_main_pages_are_accessible_narrow_and_translated(
    served: str, make_officer: Callable[..., Officer]
) -> None:
    if not AXE.is_file():
        pytest.fail(f"{AXE} missing: run `make setup` (npm ci in tests/browser)")
    from playwright.sync_api import expect, sync_playwright

    officer = make_officer()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    found: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        # axe is injected as a script, which the CSP forbids: bypass it for these checks only.
        context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        visits = [(name, path, False) for name, path in PUBLIC_PAGES.items()]
        visits += [(name, path, True) for name, path in OFFICER_PAGES.items()]
        signed_in = False
        for name, path, needs_officer in visits:
            if needs_officer and not signed_in:
                _sign_in(page, served, officer)
                signed_in = True
            for width in (1280, 390, 360):
                page.set_viewport_size({"width": width, "height": 900})
                page.goto(f"{served}{path}")
                if width == 360 and _sideways(page):
                    found.append(f"{name}: scrolls sideways at 360 px")
                if width != 360:
                    page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
            found += [f"{name}: {p}" for p in _problems(page)]
        context.close()

        for locale, heading, tag in (("es", "Iniciar sesión", "es"), ("zh-CN", "登录", "zh-Hans")):
            lang = browser.new_context(
                locale=locale, extra_http_headers={"Accept-Language": locale}
            )
            localised = lang.new_page()
            localised.goto(f"{served}/auth/login")
            expect(localised.get_by_role("heading", name=heading)).to_be_visible()
            expect(localised.locator("html")).to_have_attribute("lang", tag)
            localised.screenshot(path=str(SCREENSHOTS / f"login-{locale}.png"))
            lang.close()
        browser.close()
    print(f"screenshots in {SCREENSHOTS}")
    assert not found, "\n".join(found)
