"""Languages of pages, e-mails and SMS: English, Spanish and Simplified Chinese (Flask-Babel).

Every user-facing string is written for translation (``gettext`` / ``lazy_gettext`` in code,
``{{ _('...') }}`` in templates). The request's language comes from the ``lang`` cookie the
portal's language switch sets, else from ``Accept-Language``; messages sent outside a request
(the expiry run) use ``force_locale`` with the recipient's language.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, has_request_context, request
from flask_babel import Babel

# Locale identifiers as Babel spells them; ``zh_Hans`` is Simplified Chinese.
LANGUAGES: tuple[str, ...] = ("en", "es", "zh_Hans")
DEFAULT_LANGUAGE = "en"
LANGUAGE_COOKIE = "lang"
#: The catalogs: ``<language>/LC_MESSAGES/messages.po`` in git, the ``.mo`` files compiled from
#: them by ``make setup`` (``pybabel compile``); a language without its ``.mo`` shows English.
TRANSLATIONS_DIR = Path(__file__).resolve().parent / "translations"

babel = Babel()


def normalise_language(value: str | None) -> str:
    """One of LANGUAGES for a stored or requested tag (``zh-CN``, ``es-MX``, ``zh_Hans``...)."""
    tag = (value or "").replace("-", "_").lower()
    for language in LANGUAGES:
        if tag == language.lower():
            return language
    if tag.startswith("zh"):
        return "zh_Hans"
    if tag.startswith("es"):
        return "es"
    return DEFAULT_LANGUAGE


def select_locale() -> str:
    if not has_request_context():
        # A command or worker (an app context only): messages in the default language.
        return DEFAULT_LANGUAGE
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    if chosen:
        return normalise_language(chosen)
    # Werkzeug's best_match compares tags case-insensitively with '-' and '_' alike.
    best = request.accept_languages.best_match(["en", "es", "zh-Hans", "zh-CN", "zh"])
    return normalise_language(best)


def init_app(app: Flask) -> None:
    babel.init_app(
        app,
        locale_selector=select_locale,
        default_locale=DEFAULT_LANGUAGE,
        default_translation_directories=str(TRANSLATIONS_DIR),
    )
