"""Helpers of the browser tests: Debian's Chromium, axe-core, screenshots, the officer's sign-in
and the translated UI strings (read from the compiled catalogs, so no test keeps three copies of
a label)."""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pyotp
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from ca_service.i18n import TRANSLATIONS_DIR
from ca_service.issuance.models import DocumentType
from tests.auth.flows import Officer
from tests.issuance.conftest import sealed_documents
from tests.issuance.seal_factory import Authority

ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
#: Widths of the screenshots; at NARROW the page must not scroll sideways either.
WIDTHS = (1280, 390)
NARROW = 360
#: What <html lang> says, the catalog's directory and a browser locale, per language.
HTML_LANG = {"en": "en", "es": "es", "zh-Hans": "zh-Hans"}
CATALOG = {"en": "en", "es": "es", "zh-Hans": "zh_Hans"}
BROWSER_LOCALE = {"en": "en-GB", "es": "es-ES", "zh-Hans": "zh-CN"}
# What the elements whose whole text is UI copy are (checked for English left in a translation).
_COPY = "h1, h2, h3, th, label, button, a, dt, legend, summary, option"


@cache
def _translations(language: str) -> NullTranslations:
    if language == "en":
        return NullTranslations()
    return Translations.load(str(TRANSLATIONS_DIR), [CATALOG[language]], domain="messages")


@dataclass(frozen=True)
class Ui:
    """The UI strings of one language, translated as Flask-Babel does (gettext, then %)."""

    language: str

    def __call__(self, msgid: str, **values: Any) -> str:
        text = _translations(self.language).gettext(msgid)
        return text % values if values else text

    def in_context(self, context: str, msgid: str) -> str:
        """``pgettext``: a message with a context (the same English word, another meaning)."""
        return _translations(self.language).pgettext(context, msgid)

    def pattern(self, msgid: str) -> re.Pattern[str]:
        """The message with each ``%(name)s`` matching anything (for flashes with details)."""
        parts = re.split(r"%\(\w+\)s", self(msgid))
        return re.compile(".*".join(re.escape(p) for p in parts))


@cache
def english_copy(language: str) -> frozenset[str]:
    """English msgids (without placeholders) that ``language`` translates differently: shown
    as the whole text of a heading, label or button, they are English left untranslated."""
    po = TRANSLATIONS_DIR / CATALOG[language] / "LC_MESSAGES" / "messages.po"
    with po.open("rb") as f:
        catalog = read_po(f)
    return frozenset(
        m.id
        for m in catalog
        if isinstance(m.id, str) and m.id and m.string and m.string != m.id and "%(" not in m.id
    )


def english_left(page: Any, language: str) -> list[str]:
    """The UI copy of the page shown that is still English in ``language``."""
    if language == "en":
        return []
    texts: list[str] = page.evaluate(
        "s => [...document.querySelectorAll(s)].map(e => e.innerText.trim())", _COPY
    )
    english = english_copy(language)
    return sorted({t for t in texts if t in english})


def axe_problems(page: Any) -> list[str]:
    """Serious or critical axe-core violations of the page shown, one line each."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run()")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


_OVERFLOWING = """() => {
  if (document.scrollingElement.scrollWidth <= window.innerWidth) return [];
  const wide = [...document.body.querySelectorAll('*')].filter(
    e => e.getBoundingClientRect().right > window.innerWidth + 1);
  // The innermost ones: those that hold no other overflowing element.
  return wide.filter(e => !wide.some(o => o !== e && e.contains(o))).slice(0, 3).map(
    e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : '')
      + ' ' + JSON.stringify(e.innerText.slice(0, 40)));
}"""


def sideways(page: Any) -> list[str]:
    """Why the page shown scrolls sideways: its innermost elements past the right edge (none
    when it does not)."""
    found: list[str] = page.evaluate(_OVERFLOWING)
    if not found and page.evaluate(
        "() => document.scrollingElement.scrollWidth > window.innerWidth"
    ):
        return ["(no element found)"]
    return found


@dataclass
class PageChecks:
    """Collects what is wrong with the pages a test shows: axe findings, sideways scrolling at
    360 px, English left in a translation; and writes the screenshots at 1280 and 390 px."""

    language: str = "en"
    found: list[str] = field(default_factory=list)

    def check(self, page: Any, name: str) -> None:
        """Check the page shown (it is reloaded at each width, then left at 1280 px)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        url, suffix = page.url, "" if self.language == "en" else f"-{self.language}"
        label = f"{name}{suffix}"
        for width in (*WIDTHS, NARROW):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(url)
            if width == NARROW:
                if wide := sideways(page):
                    self.found.append(f"{label}: scrolls sideways at {NARROW} px: {wide}")
            else:
                page.screenshot(path=str(SCREENSHOTS / f"{label}-{width}.png"), full_page=True)
        page.set_viewport_size({"width": WIDTHS[0], "height": 900})
        page.goto(url)
        self.found += [f"{label}: {p}" for p in axe_problems(page)]
        self.found += [f"{label}: English left: {t!r}" for t in english_left(page, self.language)]


def officer_sign_in(page: Any, base: str, officer: Officer, ui: Ui) -> None:
    """Password, then the TOTP code, in the officer's language."""
    page.goto(f"{base}/auth/login")
    page.get_by_label(ui("Username")).fill(officer.user.username)
    page.get_by_label(ui("Password")).fill(officer.password)
    page.get_by_role("button", name=ui("Continue"), exact=True).click()
    page.get_by_label(ui("Six-digit code")).fill(pyotp.TOTP(officer.seed).now())
    page.get_by_role("button", name=ui("Sign in"), exact=True).click()


def sealed_off_the_loop(ca: Authority, number: str) -> dict[DocumentType, bytes]:
    """The sealed PDFs, made in a thread of their own: pyHanko signs with asyncio.run, which
    refuses to run in the thread where Playwright's event loop is."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(sealed_documents, ca, number).result()
