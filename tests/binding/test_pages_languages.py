"""The binding pages and the trust-anchor page in Spanish and Chinese: their texts, the
states of anchors and CRLs and their dates in the reader's language."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from ca_service.auth.models import Role
from tests.api.conftest import API
from tests.auth.certificates import sign
from tests.binding.conftest import StaffClient
from tests.binding.test_binding import TaxWorld, tax  # noqa: F401  (fixture used by name)
from tests.issuance.conftest import (  # noqa: F401  (fixtures used by name)
    EmployerAccount,
    employer_login,
    make_employer,
)

ES = {"Accept-Language": "es-ES,es;q=0.9"}
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


def test_binding_pages_in_spanish_and_chinese(
    app: Flask,
    tax: TaxWorld,  # noqa: F811
    make_employer: Callable[..., EmployerAccount],  # noqa: F811
    staff_client: StaffClient,
) -> None:
    account = make_employer()
    browser = employer_login(app.test_client(), account)
    text = browser.get("/account/bindings/", headers=ES).get_data(as_text=True)
    nonce = text.split("--challenge ", 1)[1].split(" ", 1)[0]
    assert "Firmando un desafío con la clave del certificado tributario" in text
    assert 'alt="Código QR del desafío de vinculación"' in text
    assert "No hay ningún certificado tributario vinculado." in text
    certificate, key = tax.ca.issue(account.number)
    bound = app.test_client().post(
        f"{API}/bindings",
        json={
            "challenge": nonce,
            "certificate": tax.pem(certificate),
            "signature": sign(key, f"ca-service bind challenge: {nonce}"),
        },
    )
    assert bound.status_code == 201, bound.get_data(as_text=True)

    text = browser.get("/account/bindings/", headers=ES).get_data(as_text=True)
    assert "Certificados tributarios vinculados a" in text
    assert "Desvincular" in text
    assert "Unbind" not in text
    assert "Vinculado (UTC)" in text
    year = certificate.not_valid_after_utc.year
    # utc_date in Spanish: "6 dic 2027", not the ISO form English pages show.
    assert f"{certificate.not_valid_after_utc:%Y-%m-%d}" not in text
    assert f" {year}</td>" in text

    officer = staff_client(Role.RA_OFFICER)
    text = officer.get(f"/officer/bindings/?number={account.number}", headers=ZH).get_data(
        as_text=True
    )
    assert "已绑定的税务证书" in text
    assert "用人单位的统一社会信用代码" in text
    assert "解除绑定" in text
    assert "Unbind" not in text
    assert f"{year}年" in text


def test_trust_page_in_chinese(
    app: Flask,
    tax: TaxWorld,  # noqa: F811
    staff_client: StaffClient,
) -> None:
    admin = staff_client(Role.CA_ADMIN)
    page = admin.get("/admin/trust/", headers=ZH)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    for shown in ("信任锚", "已启用", "停用", "立即获取 CRL", "上传 CRL", "添加信任锚", "税务"):
        assert shown in text, shown
    for english in ("Trust anchors", ">enabled", "Fetch CRL now", "Upload CRL", "not checked"):
        assert english not in text, english
