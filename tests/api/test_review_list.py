"""The officers' queue in the API: paged, searched and filtered by the console's own code, with
400s naming what is allowed; documents carry their verdict's reason code and a message in the
caller's language."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from ca_service.issuance import queue
from tests.api.conftest import API, ApiEmployer, bearer, error_of, submitted_application
from tests.issuance.seal_factory import Authority


def test_review_list_pages_and_filters(
    client: FlaskClient,
    api_employer: Callable[[], ApiEmployer],
    officer_token: Callable[[], str],
    trusted_seal_ca: Authority,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    employers = [api_employer() for _ in range(3)]
    ids = [submitted_application(client, e, trusted_seal_ca) for e in employers]
    officer = bearer(officer_token())
    monkeypatch.setattr(queue, "PAGE_SIZE", 2)

    first = client.get(f"{API}/review", headers=officer)
    assert first.status_code == 200
    body = first.get_json()
    assert [a["id"] for a in body["applications"]] == ids[:2]  # open ones, oldest first
    assert (body["total"], body["page"], body["pages"], body["page_size"]) == (3, 1, 2, 2)
    assert body["previous"] is None
    assert body["counts"]["open"] == 3
    assert body["counts"]["submitted"] == 3
    second = client.get(body["next"], headers=officer).get_json()
    assert [a["id"] for a in second["applications"]] == ids[2:]
    assert second["next"] is None
    assert client.get(second["previous"], headers=officer).get_json() == body

    newest = client.get(f"{API}/review?sort=newest&page=1", headers=officer).get_json()
    assert [a["id"] for a in newest["applications"]] == ids[:0:-1]
    assert "sort=newest" in newest["next"]

    number = employers[1].account.number
    for term in (number.lower(), f"#{ids[1]}"):
        found = client.get(f"{API}/review", query_string={"q": term}, headers=officer)
        assert [a["id"] for a in found.get_json()["applications"]] == [ids[1]]
    none = client.get(f"{API}/review?status=issued&kind=renewal", headers=officer).get_json()
    assert none["applications"] == []
    assert none["total"] == 0
    assert none["pages"] == 1

    past = client.get(f"{API}/review?page=9", headers=officer).get_json()
    assert past["applications"] == []
    assert past["next"] is None
    assert "page=2" in past["previous"]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("status=draft", "submitted, awaiting_confirmation"),
        ("kind=old", "all, new, renewal"),
        ("sort=alpha", "oldest, newest"),
        ("page=0", "from 1 to 1000000"),
        ("page=two", "from 1 to 1000000"),
        ("q=" + "x" * 101, "at most 100"),
    ],
)
def test_review_list_bad_values_are_400_naming_what_is_allowed(
    client: FlaskClient, officer_token: Callable[[], str], query: str, named: str
) -> None:
    response = client.get(f"{API}/review?{query}", headers=bearer(officer_token()))
    assert response.status_code == 400
    assert named in error_of(response)["message"]


def test_documents_carry_the_verdict_reason_in_the_callers_language(
    client: FlaskClient,
    api_employer: Callable[[], ApiEmployer],
    officer_token: Callable[[], str],
    trusted_seal_ca: Authority,
) -> None:
    employer = api_employer()
    application_id = submitted_application(
        client, employer, trusted_seal_ca, unsigned=("commitment_letter",)
    )
    path = f"{API}/applications/{application_id}"
    messages = {}
    for language in ("en", "es", "zh-Hans"):
        response = client.get(path, headers={**employer.headers, "Accept-Language": language})
        documents = {d["doc_type"]: d for d in response.get_json()["documents"]}
        assert documents["commitment_letter"]["verdict_reason"] == "pdf_unsigned"
        assert documents["application_form"]["verdict_reason"] == "sealed"
        messages[language] = documents["commitment_letter"]["verdict_message"]
        assert documents["commitment_letter"]["detail"]  # the English record stays
    assert messages["en"].startswith("The PDF carries no electronic seal")
    assert len(set(messages.values())) == 3  # translated, not English thrice
    review = client.get(
        f"{API}/review/{application_id}",
        headers={**bearer(officer_token()), "Accept-Language": "es"},
    ).get_json()
    letter = next(d for d in review["documents"] if d["doc_type"] == "commitment_letter")
    assert letter["verdict_message"] == messages["es"]
