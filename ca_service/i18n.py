"""Languages of pages, e-mails and SMS: English, Spanish and Simplified Chinese (Flask-Babel).

Every user-facing string is written for translation (``gettext`` / ``lazy_gettext`` in code,
``{{ _('...') }}`` in templates). The request's language comes from the ``lang`` cookie the
portal's language switch sets, else from ``Accept-Language``; messages sent outside a request
(the expiry run) use ``force_locale`` with the recipient's language.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import urlsplit

from babel import Locale
from babel.dates import format_skeleton
from babel.numbers import format_decimal
from flask import Blueprint, Flask, Response, has_request_context, redirect, request, url_for
from flask_babel import Babel, get_locale
from flask_login import current_user
from werkzeug.wrappers import Response as WerkzeugResponse

# Locale identifiers as Babel spells them; ``zh_Hans`` is Simplified Chinese.
LANGUAGES: tuple[str, ...] = ("en", "es", "zh_Hans")
DEFAULT_LANGUAGE = "en"
LANGUAGE_COOKIE = "lang"
#: The catalogs: ``<language>/LC_MESSAGES/messages.po`` in git, the ``.mo`` files compiled from
#: them by ``make setup`` (``pybabel compile``); a language without its ``.mo`` shows English.
TRANSLATIONS_DIR = Path(__file__).resolve().parent / "translations"

#: Each language named in itself, for the language switch.
LANGUAGE_NAMES: dict[str, str] = {"en": "English", "es": "Español", "zh_Hans": "简体中文"}

babel = Babel()
bp = Blueprint("language", __name__)


def N_(message: str) -> str:
    """Mark ``message`` for extraction without translating it (a msgid kept in a constant);
    ``gettext`` it where it is shown."""
    return message


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


def current_language() -> str:
    """The language of the current request or ``force_locale`` block (one of LANGUAGES)."""
    return normalise_language(str(get_locale() or DEFAULT_LANGUAGE))


def html_lang() -> str:
    """The BCP 47 tag for ``<html lang>``: ``en``, ``es``, ``zh-Hans``."""
    return current_language().replace("_", "-")


def _as_utc(value: dt.datetime | dt.date) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if value.tzinfo is None:  # the database keeps UTC without a zone (SQLite)
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


# Dates and times are always shown in UTC, and the pages say "UTC" beside them. English keeps
# the ISO 8601 form the agency's officers and the certificates use (2026-12-06 21:45); the
# other languages get their own from Babel's CLDR data (6 dic 2026, 21:45 / 2026年12月6日 21:45).
def format_utc_datetime(value: dt.datetime | None) -> str:
    """Date and time in UTC, to the minute, in the current language."""
    if value is None:
        return ""
    moment = _as_utc(value)
    language = current_language()
    if language == DEFAULT_LANGUAGE:
        return moment.strftime("%Y-%m-%d %H:%M")
    locale = Locale.parse(language)
    date = format_skeleton("yMMMd", moment, tzinfo=dt.UTC, locale=locale)
    # The language's own order of date and time ("{1}, {0}", "{1} {0}"), 24-hour clock.
    pattern = str(locale.datetime_formats["medium"])
    return pattern.replace("{1}", date).replace("{0}", moment.strftime("%H:%M"))


def format_utc_date(value: dt.datetime | dt.date | None) -> str:
    """The date (in UTC) in the current language."""
    if value is None:
        return ""
    moment = _as_utc(value)
    language = current_language()
    if language == DEFAULT_LANGUAGE:
        return moment.strftime("%Y-%m-%d")
    return format_skeleton("yMMMd", moment, tzinfo=dt.UTC, locale=language)


def format_utc_time(value: dt.datetime | None) -> str:
    """The time of day in UTC, to the second (24-hour clock in every language)."""
    if value is None:
        return ""
    return _as_utc(value).strftime("%H:%M:%S")


def format_number(value: float | None) -> str:
    """A number with the current language's digit grouping and decimal sign."""
    if value is None:
        return ""
    return str(format_decimal(value, locale=current_language()))


def _local_path(target: str | None) -> str:
    """``target`` when it is a path on this site, else the start page (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return url_for("web.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return url_for("web.index")
    return target


@bp.post("/language")
def switch() -> WerkzeugResponse:
    """Remember the chosen language in a cookie (and, for a signed-in employer administrator,
    on the employer, so that e-mail and SMS follow it), then go back to the page it came from."""
    from ca_service.auth.models import Role
    from ca_service.db import db
    from ca_service.employers.models import Employer

    language = normalise_language(request.form.get("language"))
    if current_user.is_authenticated and current_user.role is Role.EMPLOYER_ADMIN:
        employer = db.session.get(Employer, current_user.employer_id)
        if employer is not None and employer.language != language:
            employer.language = language
            db.session.flush()
    response = redirect(_local_path(request.form.get("next")), code=303)
    response.set_cookie(
        LANGUAGE_COOKIE,
        language,
        max_age=365 * 24 * 3600,
        samesite="Lax",
        httponly=True,
        secure=request.is_secure,
    )
    return response


def init_app(app: Flask) -> None:
    babel.init_app(
        app,
        locale_selector=select_locale,
        default_locale=DEFAULT_LANGUAGE,
        default_translation_directories=str(TRANSLATIONS_DIR),
    )
    app.jinja_env.filters.update(
        utc_datetime=format_utc_datetime,
        utc_date=format_utc_date,
        utc_time=format_utc_time,
        decimal=format_number,
    )
    app.jinja_env.globals.update(
        html_lang=html_lang,
        current_language=current_language,
        language_choices=lambda: list(LANGUAGE_NAMES.items()),
    )
    app.register_blueprint(bp)
    app.after_request(_vary_by_language)


def _vary_by_language(response: Response) -> Response:
    # A page's words depend on Accept-Language (and the lang cookie, which Flask's session
    # handling already names in Vary when it applies); a shared cache must not mix languages.
    if response.mimetype == "text/html":
        response.vary.add("Accept-Language")
    return response
