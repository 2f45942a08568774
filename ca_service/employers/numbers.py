"""Validation of registration and ID numbers with python-stdnum.

The scheme of registration numbers is one setting (REGISTRATION_NUMBER_SCHEME), a python-stdnum
module such as ``stdnum.cn.uscc``: another country's number replaces it without code changes.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType

from flask_babel import gettext as _
from stdnum.cn import ric
from stdnum.exceptions import ValidationError as StdnumError

from ca_service.errors import ConfigurationError, ValidationError, echoed


@cache
def _scheme(name: str) -> ModuleType:
    try:
        module = importlib.import_module(name)
    except ImportError:
        raise ConfigurationError(f"no python-stdnum module {name!r}") from None
    if not callable(getattr(module, "validate", None)):
        raise ConfigurationError(f"{name!r} is not a python-stdnum number module")
    return module


def registration_number(value: str, scheme: str) -> str:
    """The compact, validated registration number.

    :raises ValidationError: saying what is wrong (length, characters, check digit).
    """
    module = _scheme(scheme)
    try:
        compact = str(module.validate(value))
    except StdnumError as exc:
        name = getattr(module, "__doc__", "") or scheme
        raise ValidationError(
            _(
                "%(value)s is not a valid registration number (%(scheme)s): %(exc)s",
                value=echoed(value.strip()),
                scheme=name.splitlines()[0].rstrip("."),
                exc=exc,
            )
        ) from None
    return compact.upper()


def legal_representative_id(value: str) -> str:
    """A validated PRC Resident Identity Card number (stdnum.cn.ric).

    :raises ValidationError: when the number is not valid.
    """
    try:
        return str(ric.validate(value)).upper()
    except StdnumError as exc:
        raise ValidationError(
            _(
                "%(value)s is not a valid resident ID number: %(exc)s",
                value=echoed(value.strip()),
                exc=exc,
            )
        ) from None
