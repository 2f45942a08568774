"""A real browser (headless Chromium via Playwright) against `ca-service serve` on loopback."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pyotp

from tests.conftest import CliInvoke

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_officer_first_sign_in_in_a_browser(served: str, cli: CliInvoke, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    created = cli(
        "user",
        "create",
        "--username",
        "clerk",
        "--email",
        "c@example.test",
        "--full-name",
        "Counter Clerk",
        "--role",
        "ra_officer",
    )
    one_time = re.search(r"shown once\): (\S+)", created.output)
    assert one_time
    new_password = "correct horse battery staple"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        page.goto(f"{served}/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.get_by_label("Username").fill("clerk")
        page.get_by_label("Password").fill(one_time.group(1))
        page.get_by_role("button", name="Continue").click()

        expect(page.get_by_role("heading", name="Choose your password")).to_be_visible()
        page.get_by_label("New password", exact=True).fill(new_password)
        page.get_by_label("Repeat the new password").fill(new_password)
        page.get_by_role("button", name="Set password").click()

        expect(page.get_by_role("heading", name="Set up your authenticator")).to_be_visible()
        qr = page.get_by_alt_text("QR code for your authenticator app")
        expect(qr).to_be_visible()
        assert qr.evaluate("img => img.naturalWidth") > 0  # the QR image really renders
        seed = page.locator("code").inner_text()
        page.screenshot(path=str(tmp_path / "enrol.png"))
        page.get_by_label("Six-digit code").fill(pyotp.TOTP(seed).now())
        page.get_by_role("button", name="Confirm").click()

        expect(page.get_by_role("heading", name="Counter Clerk")).to_be_visible()
        expect(page.get_by_text("ra officer")).to_be_visible()
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_text("You are signed out.")).to_be_visible()
        browser.close()
