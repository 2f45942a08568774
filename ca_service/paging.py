"""The page number of a paged list, as the query string gives it."""

from __future__ import annotations

from flask_babel import gettext as _

from ca_service.errors import ValidationError, echoed

# Far beyond any real list, and small enough that the OFFSET fits every database's integer.
MAX_PAGE = 1_000_000


def parse_page(raw: str | None) -> int:
    """``raw`` as a page number, 1 when absent.

    :raises ValidationError: for anything but a whole number from 1 to MAX_PAGE.
    """
    text = (raw or "1").strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise ValidationError(
            _(
                "The page must be a whole number from 1 to %(max)s, not %(value)s.",
                max=MAX_PAGE,
                value=echoed(text),
            )
        )
    return int(text)
