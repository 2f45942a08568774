"""Validators shared by the web forms."""

from __future__ import annotations

from typing import Any

from wtforms import validators


class Length(validators.Length):
    """WTForms' ``Length`` that does not send an over-long value back in the page: the field
    is emptied, so a 200 kB paste gets a short answer instead of itself."""

    def __call__(self, form: Any, field: Any) -> None:
        try:
            super().__call__(form, field)
        except validators.ValidationError:
            if self.max != -1 and isinstance(field.data, str) and len(field.data) > self.max:
                field.data = ""
                field.raw_data = []
            raise
