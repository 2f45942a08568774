"""The whole journey of a first-time employer in a real browser (Debian's headless Chromium via
Playwright), in English, Spanish and Chinese, against `ca-service serve --tls`: register,
confirm the SMS code, the guided application with sealed PDFs, an officer approves in the
console, the employer downloads the certificate and opens the notice, signs in with that very
certificate as the TLS client certificate, and renews it on the renewal page. On the way each
page is checked with axe-core, at 360 px and for English left in the translation, and
screenshotted at 1280 and 390 px into var/screenshots/.

Labels are selected in each language by the translation the compiled catalogs give (Ui)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ca_service.issuance.models import DocumentType
from tests.auth.flows import Officer
from tests.auth.tls_fixtures import Served, write_key
from tests.browser.support import (
    BROWSER_LOCALE,
    HTML_LANG,
    PageChecks,
    Ui,
    officer_sign_in,
    sealed_off_the_loop,
)
from tests.conftest import CliInvoke
from tests.issuance.conftest import csr_pem, new_number
from tests.issuance.seal_factory import Authority
from tests.pki_tools import write_pem


def _context(browser: Any, language: str, **options: Any) -> Any:
    """A browser context that asks for ``language`` the way a browser set to it does; the CSP
    is bypassed so that axe-core can be injected."""
    return browser.new_context(
        locale=BROWSER_LOCALE[language],
        extra_http_headers={"Accept-Language": f"{BROWSER_LOCALE[language]},{language};q=0.9"},
        ignore_https_errors=True,  # the server's certificate is from a throwaway test CA
        bypass_csp=True,
        viewport={"width": 1280, "height": 900},
        **options,
    )


def _download(page: Any, link: str) -> bytes:
    with page.expect_download() as download:
        page.get_by_role("link", name=link, exact=True).click()
    return Path(download.value.path()).read_bytes()


@pytest.mark.parametrize("language", ["en", "es", "zh-Hans"])
def test_a_first_time_employer_does_it_all_in_the_browser(
    language: str,
    browser: Any,
    tls_server: Served,
    cli: CliInvoke,
    trusted_seal_ca: Authority,
    make_officer: Callable[..., Officer],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    ui, base = Ui(language), tls_server.base_url
    checks = PageChecks(language)
    number, mobile = new_number(), "139" + "".join(secrets.choice("0123456789") for _ in range(8))
    password = "our company's long password"
    officer = make_officer()
    documents = sealed_off_the_loop(trusted_seal_ca, number)
    key = ec.generate_private_key(ec.SECP256R1())

    # The Spanish employer's browser asks for English; the language switch turns it to Spanish.
    employer = _context(browser, "en" if language == "es" else language)
    page = employer.new_page()
    page.goto(f"{base}/")
    if language == "es":
        english = Ui("en")
        page.get_by_label(english("Language")).select_option(label="Español")
        page.get_by_role("button", name=english("Change language")).click()
    expect(page.locator("html")).to_have_attribute("lang", HTML_LANG[language])

    page.get_by_role("link", name=ui("Register your company")).click()
    page.get_by_label(ui("Registration number (Unified Social Credit Code)")).fill(number)
    page.get_by_label(ui("Legal name of the company")).fill("Xiamen Browser Test Co., Ltd.")
    page.get_by_label(ui("Your name (the administrator)")).fill("Wang Fang")
    page.get_by_label(ui("Reserved mobile number")).fill(mobile)
    page.get_by_label(ui("E-mail address")).fill(f"hr-{number.lower()}@browser.test")
    page.get_by_label(ui("Password"), exact=True).fill(password)
    page.get_by_label(ui("Repeat the password")).fill(password)
    page.get_by_role("button", name=ui("Register"), exact=True).click()

    expect(page.get_by_role("heading", name=ui("Confirm your mobile number"))).to_be_visible()
    sms = cli("outbox", "list", "--to", mobile).output
    code = re.search(r"\b(\d{6})\b", sms)
    assert code, sms
    page.get_by_label(ui("Six-digit code")).fill(code.group(1))
    page.get_by_role("button", name=ui("Confirm"), exact=True).click()
    expect(page.get_by_text(ui("Your mobile number is confirmed."))).to_be_visible()

    page.get_by_role("link", name=ui("Applications"), exact=True).click()
    page.get_by_role("button", name=ui("Start an application")).click()
    expect(page.get_by_role("heading", name=ui("Your application, step by step"))).to_be_visible()
    draft_url = page.url.split("?")[0]
    checks.check(page, "application-draft")
    # The guided application: one step per document, the seal verdict shown after upload.
    uploaded = ui.pattern("“%(label)s” uploaded: %(verdict_detail)s")
    for doc_type, pdf in documents.items():
        page.goto(f"{draft_url}?step={doc_type.value}")
        page.get_by_label(ui("File (PDF, PNG or JPEG)")).set_input_files(
            files=[{"name": f"{doc_type.value}.pdf", "mimeType": "application/pdf", "buffer": pdf}]
        )
        page.get_by_role("button", name=ui("Upload and check the seal")).click()
        expect(page.get_by_text(uploaded)).to_be_visible()
    page.goto(f"{draft_url}?step=request")
    page.get_by_label(ui("…or paste the PEM text")).fill(csr_pem(key))
    page.get_by_role("button", name=ui("Attach request")).click()
    accepted = ui("Certificate request accepted (%(key_description)s).", key_description="EC P-256")
    expect(page.get_by_text(accepted)).to_be_visible()
    page.goto(f"{draft_url}?step=submit")
    page.get_by_role("button", name=ui("Submit for review")).click()
    expect(
        page.get_by_text(ui("Submitted. An officer will review your application."))
    ).to_be_visible()
    application_url = page.url

    officer_context = _context(browser, language)
    console = officer_context.new_page()
    officer_sign_in(console, base, officer, ui)
    console.get_by_role("navigation").get_by_role("link", name=ui("Review queue")).click()
    console.get_by_role("link", name=application_url.rsplit("/", 1)[1], exact=True).click()
    expect(console.locator("iframe")).to_have_count(len(DocumentType))
    checks.check(console, "review")
    console.get_by_role("button", name=ui("Approve"), exact=True).click()
    expect(console.get_by_text(ui("Approved and issued."))).to_be_visible()
    officer_context.close()

    page.goto(application_url)
    checks.check(page, "application-issued")
    certificate = x509.load_pem_x509_certificate(_download(page, ui("Certificate (PEM)")))
    attributes = certificate.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
    assert attributes[0].value == number
    assert certificate.public_key().public_numbers() == key.public_key().public_numbers()
    page.get_by_role("link", name=ui("Issuance notice")).click()
    qr = page.get_by_alt_text(ui.pattern("QR code linking to %(url)s"))
    expect(qr).to_be_visible()
    assert qr.evaluate("img => img.naturalWidth") > 0
    checks.check(page, "notice")
    serial = format(certificate.serial_number, "x")
    page.goto(f"{base}/verify/{serial}")
    expect(
        page.get_by_text(ui.in_context("certificate status", "Valid"), exact=True)
    ).to_be_visible()
    employer.close()

    # The certificate just issued, as this browser's TLS client certificate.
    cert_file = write_pem(tmp_path / "employer.crt", [certificate])
    key_file = write_key(tmp_path / "employer.key", key)
    identity = {"origin": base, "certPath": str(cert_file), "keyPath": str(key_file)}
    signed = _context(browser, language, client_certificates=[identity])
    page = signed.new_page()
    page.goto(f"{base}/auth/login")
    page.get_by_role("link", name=ui("Sign in with a certificate")).click()
    page.get_by_role("button", name=ui("Use my browser's certificate")).click()
    expect(page).to_have_url(f"{base}/auth/home")
    expect(page.get_by_role("heading", name=ui("Your certificates"))).to_be_visible()
    checks.check(page, "dashboard")
    page.get_by_role("link", name=ui("Tax certificates"), exact=True).click()
    checks.check(page, "binding")

    page.goto(f"{base}/renewal/{serial}")
    expect(page.get_by_role("heading", name=ui("Renew with a new key"))).to_be_visible()
    checks.check(page, "renewal")
    new_key = ec.generate_private_key(ec.SECP256R1())
    page.get_by_label(ui("…or paste the PEM text")).fill(csr_pem(new_key))
    page.get_by_role("button", name=ui("Renew"), exact=True).click()
    renewed = ui.pattern(
        "Renewed: certificate %(serial)s is valid until %(date)s. Download it below."
    )
    expect(page.get_by_text(renewed)).to_be_visible()
    new = x509.load_pem_x509_certificate(_download(page, ui("Certificate (PEM)")))
    assert new.public_key().public_numbers() == new_key.public_key().public_numbers()
    assert new.serial_number != certificate.serial_number
    signed.close()
    assert not checks.found, "\n".join(checks.found)
