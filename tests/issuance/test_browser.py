"""The whole employer journey in a real browser (headless Chromium via Playwright) against
`ca-service serve`: register, confirm the SMS code, apply with sealed PDFs, an officer approves
in the console, the employer downloads the certificate and opens the issuance notice."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pyotp
from cryptography import x509

from ca_service.issuance.models import DocumentType
from tests.auth.flows import Officer
from tests.conftest import CliInvoke
from tests.issuance.conftest import new_number, sealed_documents, software_csr
from tests.issuance.seal_factory import Authority

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def test_employer_journey_in_a_browser(
    served: str,
    cli: CliInvoke,
    trusted_seal_ca: Authority,
    make_officer: Callable[..., Officer],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    number = new_number()
    password = "our company's long password"
    officer = make_officer()
    # Made before Playwright starts its event loop (pyHanko signs with asyncio.run).
    documents, csr = sealed_documents(trusted_seal_ca, number), software_csr()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(f"{served}/")
        page.get_by_role("link", name="Register your company").click()
        page.get_by_label("Registration number").fill(number)
        page.get_by_label("Legal name of the company").fill("Xiamen Browser Test Co., Ltd.")
        page.get_by_label("Your name").fill("Wang Fang")
        page.get_by_label("Reserved mobile number").fill("13900139000")
        page.get_by_label("E-mail address").fill("hr@browser.test")
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_label("Repeat the password").fill(password)
        page.get_by_role("button", name="Register").click()

        expect(page.get_by_role("heading", name="Confirm your mobile number")).to_be_visible()
        sms = cli("outbox", "list", "--to", "13900139000").output
        code = re.search(r"code is (\d{6})", sms)
        assert code, sms
        page.get_by_label("Six-digit code").fill(code.group(1))
        page.get_by_role("button", name="Confirm").click()
        expect(page.get_by_text("Your mobile number is confirmed.")).to_be_visible()

        page.get_by_role("link", name="Applications").click()
        page.get_by_role("button", name="Start an application").click()
        expect(
            page.get_by_role("heading", name=re.compile(r"Application \d+ — draft"))
        ).to_be_visible()
        draft_url = page.url.split("?")[0]
        # The guided application: one step per document, the seal verdict shown after upload.
        for doc_type, pdf in documents.items():
            page.goto(f"{draft_url}?step={doc_type.value}")
            page.get_by_label("File (PDF, PNG or JPEG)").set_input_files(
                files=[
                    {"name": f"{doc_type.value}.pdf", "mimeType": "application/pdf", "buffer": pdf}
                ]
            )
            page.get_by_role("button", name="Upload and check the seal").click()
            expect(page.get_by_text(f"“{doc_type.label}” uploaded")).to_be_visible()
        page.goto(f"{draft_url}?step=request")
        page.get_by_label("…or paste the PEM text").fill(csr.decode())
        page.get_by_role("button", name="Attach request").click()
        expect(page.get_by_text("Certificate request accepted (EC P-256)")).to_be_visible()
        page.goto(f"{draft_url}?step=submit")
        page.get_by_role("button", name="Submit for review").click()
        expect(page.get_by_text("Submitted. An officer will review")).to_be_visible()
        application_url = page.url

        console = browser.new_page()
        console.goto(f"{served}/auth/login")
        console.get_by_label("Username").fill(officer.user.username)
        console.get_by_label("Password").fill(officer.password)
        console.get_by_role("button", name="Continue").click()
        console.get_by_label("Six-digit code").fill(pyotp.TOTP(officer.seed).now())
        console.get_by_role("button", name="Sign in").click()
        # The header's link (the account page links the console's pages too).
        console.get_by_role("navigation").get_by_role("link", name="Review queue").click()
        console.get_by_role("link", name=application_url.rsplit("/", 1)[1], exact=True).click()
        expect(console.locator("iframe")).to_have_count(len(DocumentType))
        console.get_by_role("button", name="Approve").click()
        expect(console.get_by_text("Approved and issued.")).to_be_visible()

        page.goto(application_url)
        expect(page.get_by_role("heading", name=re.compile("issued"))).to_be_visible()
        with page.expect_download() as download:
            page.get_by_role("link", name="Certificate (PEM)").click()
        certificate = x509.load_pem_x509_certificate(Path(download.value.path()).read_bytes())
        attributes = certificate.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
        assert attributes[0].value == number
        page.get_by_role("link", name="Issuance notice").click()
        qr = page.get_by_alt_text(re.compile("QR code linking to"))
        expect(qr).to_be_visible()
        assert qr.evaluate("img => img.naturalWidth") > 0
        page.screenshot(path=str(tmp_path / "notice.png"))
        page.goto(f"{served}/verify/{format(certificate.serial_number, 'x')}")
        expect(page.get_by_text("Valid", exact=True)).to_be_visible()
        browser.close()
