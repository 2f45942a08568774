"""Every user-facing string in the code and templates has a real translation in each catalog:
extracted here with Babel's own API and the project's babel.cfg, as `make translations` does."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from ca_service.i18n import LANGUAGES, TRANSLATIONS_DIR

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {**DEFAULT_KEYWORDS, "lazy_gettext": None, "_l": None}
TRANSLATED = [language for language in LANGUAGES if language != "en"]
# Files whose strings may still be missing from the catalogs: none. (Kept, so that a file
# whose translation has to wait is named here rather than the test switched off.)
NOT_YET_TRANSLATED: tuple[str, ...] = ()
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")

Key = tuple[str | None, str]  # (context, msgid)


@cache
def extracted() -> dict[Key, list[str]]:
    """Each message of the code and templates with the files it occurs in."""
    with (ROOT / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config, "babel.cfg")
    found: dict[Key, list[str]] = {}
    for filename, _lineno, message, _comments, context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=KEYWORDS, strip_comment_tags=True
    ):
        msgid = message[0] if isinstance(message, tuple) else message
        if msgid:
            found.setdefault((context, msgid), []).append(filename)
    return found


@cache
def catalog(language: str) -> Catalog:
    with (TRANSLATIONS_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        return read_po(po, locale=language)


def _forms(string: str | tuple[str, ...]) -> tuple[str, ...]:
    return string if isinstance(string, tuple) else (string,)


def test_extraction_finds_the_strings_of_code_and_templates() -> None:
    # Guards the test itself: a broken babel.cfg extracting nothing would pass everything.
    files = {f for names in extracted().values() for f in names}
    assert any(f.startswith("templates/") and f.endswith(".html") for f in files)
    assert any(f.startswith("templates/") and f.endswith(".txt") for f in files)
    assert any(f.startswith("ca_service/") for f in files)
    assert (None, "Sign in") in extracted()  # a template string
    assert (None, "Wrong username or password.") in extracted()  # N_() in code
    assert (None, "Reserved mobile number") in extracted()  # lazy_gettext form label
    assert len(extracted()) > 300


def missing_translations(entries: Catalog, messages: dict[Key, list[str]]) -> list[str]:
    """What ``entries`` lacks for ``messages``: absent, fuzzy or empty translations."""
    problems = []
    for (context, msgid), files in sorted(messages.items(), key=lambda item: item[0][1]):
        if all(f.startswith(NOT_YET_TRANSLATED) for f in files):
            continue
        entry = entries.get(msgid, context=context)
        where = ", ".join(sorted(set(files)))
        if entry is None:
            problems.append(f"not in the catalog: {msgid!r} ({where})")
        elif entry.fuzzy:
            problems.append(f"fuzzy: {msgid!r} ({where})")
        elif not all(_forms(entry.string)) or len(_forms(entry.string)) < (
            entries.num_plurals if entry.pluralizable else 1
        ):
            problems.append(f"untranslated: {msgid!r} ({where})")
    return problems


def wrong_placeholders(entries: Catalog) -> list[str]:
    """Translations whose %(name)s placeholders differ from their msgid's."""
    wrong = []
    for entry in entries:
        if not entry.id:
            continue
        ids = _forms(entry.id)
        expected = set(PLACEHOLDER.findall(ids[-1])) | set(PLACEHOLDER.findall(ids[0]))
        for form in _forms(entry.string):
            if form and set(PLACEHOLDER.findall(form)) != expected:
                wrong.append(f"{ids[0]!r} -> {form!r}")
    return wrong


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_is_translated(language: str) -> None:
    problems = missing_translations(catalog(language), extracted())
    assert not problems, (
        f"{len(problems)} message(s) of {language} need work; run `make translations` and "
        f"translate them in ca_service/translations/{language}/LC_MESSAGES/messages.po:\n"
        + "\n".join(problems)
    )


@pytest.mark.parametrize("language", TRANSLATED)
def test_translations_keep_the_placeholders(language: str) -> None:
    wrong = wrong_placeholders(catalog(language))
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_catalog_has_no_stale_entries(language: str) -> None:
    # An entry whose string is gone from the code is a sign `make translations` was not run.
    stale = [
        entry.id
        for entry in catalog(language)
        if entry.id and (entry.context, _forms(entry.id)[0]) not in extracted()
    ]
    assert not stale, stale


def test_the_checks_catch_missing_fuzzy_empty_and_wrong_translations() -> None:
    messages: dict[Key, list[str]] = {
        (None, "Sign in"): ["templates/base.html"],
        (None, "Register"): ["templates/employers/register.html"],
        (None, "Submit"): ["templates/issuance/application.html"],
        (None, "Application %(id)s"): ["templates/issuance/review.html"],
    }
    broken = Catalog(locale="es")
    broken.add("Sign in", "")
    broken.add("Register", "Registrarse", flags=["fuzzy"])
    broken.add("Application %(id)s", "Solicitud %(numero)s")
    problems = missing_translations(broken, messages)
    assert sorted(problems) == [
        "fuzzy: 'Register' (templates/employers/register.html)",
        "not in the catalog: 'Submit' (templates/issuance/application.html)",
        "untranslated: 'Sign in' (templates/base.html)",
    ]
    assert wrong_placeholders(broken) == ["'Application %(id)s' -> 'Solicitud %(numero)s'"]
