"""No template shows words no catalog can translate: every literal text a reader sees (outside
``{{ }}`` / ``{% %}``) that contains letters is wrapped in ``_()``.

Each template is split with Jinja2's own lexer; its literal text (the ``data`` tokens) is put
together again with every expression and tag replaced by a placeholder, and read with an HTML
parser, so that a tag cut in two by an expression (``<img src="{{ qr }}" alt="QR code">``) is
still one tag. What a person reads is checked: text between tags, and the attributes that are
human text (``alt``, ``title``, ``placeholder``, ``aria-label``...). Everything else in a tag
(ids, classes, hrefs, names, types...) is markup, not language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from jinja2 import Environment

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
# Stands for an expression or a tag: a private-use character, which is not a letter.
PLACEHOLDER = "\ue000"

# Attributes whose values a person reads (or hears, with a screen reader).
HUMAN_ATTRIBUTES = frozenset({"alt", "title", "placeholder", "aria-label", "aria-description"})
# Elements whose content is not language: code and commands (<code>, <pre>: a reader types
# them as they are), scripts and styles.
VERBATIM_ELEMENTS = frozenset({"code", "pre", "script", "style"})
# Words that are the same in every language: standard names of PKI formats and protocols,
# hash algorithm names, the time zone, and field names of X.509 structures that the pages
# quote as the standards spell them. Anything else with letters must be wrapped.
NOT_LANGUAGE = re.compile(
    r"\b(?:UTC|CSR|PEM|DER|OCSP|CRL|X\.509|PKCS#\d+|SPKI|SHA-256|SHA-1|TLS|HTTPS?|URL|"
    r"thisUpdate|nextUpdate)\b"
    # The extension of a file name made from an expression ({{ slug }}.crt).
    r"|(?<=\ue000)\.(?:crt|cer|pem|der|crl|p7b|p7c)\b"
)
LETTER = re.compile(r"[^\W\d_]")
VOID_ELEMENTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


@dataclass(frozen=True)
class Untranslated:
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.line}: {self.text!r}"


def literal_text(source: str, env: Environment | None = None) -> str:
    """``source`` with each ``{{ }}`` / ``{% %}`` replaced by PLACEHOLDER (comments dropped),
    on the same lines as in ``source``."""
    env = env or Environment(autoescape=True)
    parts: list[str] = []
    line = 1
    in_tag = False
    for lineno, token, value in env.lex(source):
        if lineno > line:  # keep every piece of text on its own line number
            parts.append("\n" * (lineno - line))
            line = lineno
        if token == "data":
            parts.append(value)
            line += value.count("\n")
            in_tag = False
        elif token in ("variable_begin", "block_begin") and not in_tag:
            parts.append(PLACEHOLDER)
            in_tag = True
        elif token in ("variable_end", "block_end"):
            in_tag = False
    return "".join(parts)


def _shown(text: str) -> str:
    """``text`` as a report quotes it: one line, an expression as {{…}}."""
    return " ".join(text.split()).strip(PLACEHOLDER + " ").replace(PLACEHOLDER, "{{…}}")


def _has_language(text: str) -> bool:
    return bool(LETTER.search(NOT_LANGUAGE.sub(" ", text).replace(PLACEHOLDER, " ")))


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[Untranslated] = []
        self._verbatim: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line = self.getpos()[0]
        for name, value in attrs:
            if value and name in HUMAN_ATTRIBUTES and _has_language(value):
                self.found.append(Untranslated(line, f"{name}={_shown(value)}"))
        kind = dict(attrs).get("type")
        if tag == "input" and kind in ("submit", "button", "reset"):
            value = dict(attrs).get("value") or ""
            if _has_language(value):
                self.found.append(Untranslated(line, f"value={_shown(value)}"))
        if tag in VERBATIM_ELEMENTS:
            self._verbatim.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._verbatim and self._verbatim[-1] == tag:
            self._verbatim.pop()

    def handle_data(self, data: str) -> None:
        if self._verbatim or not _has_language(data):
            return
        # The line of the first letter, not of the whitespace or tags before it.
        first = LETTER.search(data)
        line = self.getpos()[0] + data[: first.start() if first else 0].count("\n")
        self.found.append(Untranslated(line, _shown(data)))


def untranslated(source: str) -> list[Untranslated]:
    """The literal texts with letters in a template's ``source`` that are not wrapped."""
    reader = _Reader()
    reader.feed(literal_text(source))
    reader.close()
    return reader.found


def _templates() -> list[Path]:
    return sorted(p for p in TEMPLATES.rglob("*") if p.suffix in (".html", ".txt"))


def test_the_templates_are_found() -> None:
    names = {p.relative_to(TEMPLATES).as_posix() for p in _templates()}
    assert "base.html" in names
    assert "binding/trust.html" in names
    assert any(name.endswith(".txt") for name in names)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("<p>Sign in with your password.</p>", ["Sign in with your password."]),
        ('<img src="{{ qr }}" alt="QR code" width="180">', ["alt=QR code"]),
        ('<input placeholder="Your name" name="n">', ["placeholder=Your name"]),
        ('<input type="submit" value="Save">', ["value=Save"]),
        ("<title>{% block title %}Tax certificates{% endblock %}</title>", ["Tax certificates"]),
        ("<button>Unbind</button>", ["Unbind"]),
        ("<td>{{ a.when }} by {{ a.who }}</td>", ["by"]),
        ("Dear {{ name }},\nyour certificate expires.", ["Dear {{…}}, your certificate"]),
        ("<th>Download</th><td>{{ slug }}.crt (DER)</td>", ["Download"]),
        # Wrapped, markup only, or not language: nothing to report.
        ('<p>{{ _("Sign in") }}</p>', []),
        ('<img src="{{ qr }}" alt="{{ _(\'QR code\') }}">', []),
        ('<a href="/auth/login" class="button secondary" id="x">{{ _("Back") }}</a>', []),
        ("<pre>ca-client login --url {{ base_url }}</pre><code>TAX-KEY.pem</code>", []),
        ("<td>{{ a.not_after|utc_date }} \u2013 {{ b }} · SHA-256 {{ c }} UTC</td>", []),
        ("<td>{{ slug }}.crt (DER) · {{ slug }}.pem (PEM)</td>", []),
        ("{# a comment in English #}<p>{{ _('Hi') }}</p>", []),
    ],
)
def test_the_check_finds_plain_english(source: str, expected: list[str]) -> None:
    # A self-test: an English sentence (or attribute) in a template is reported; only the
    # start of a multi-line text is compared.
    found = [f.text for f in untranslated(source)]
    assert len(found) == len(expected), found
    for text, start in zip(found, expected, strict=True):
        assert text.startswith(start), (text, start)


def test_the_check_reports_the_line() -> None:
    source = '{% extends "base.html" %}\n{% block content %}\n<p>\n  Hello\n</p>\n{% endblock %}'
    assert [(f.line, f.text) for f in untranslated(source)] == [(4, "Hello")]
    titled = '{% extends "base.html" %}\n{% block title %}\nTrust anchors{% endblock %}'
    assert [f.line for f in untranslated(titled)] == [3]


def test_every_text_a_reader_sees_is_wrapped() -> None:
    problems = [
        f"templates/{path.relative_to(TEMPLATES).as_posix()}:{finding}"
        for path in _templates()
        for finding in untranslated(path.read_text(encoding="utf-8"))
    ]
    assert not problems, "text not wrapped in _() (no catalog can translate it):\n" + "\n".join(
        problems
    )
