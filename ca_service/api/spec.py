"""What each API handler declares about itself for the OpenAPI document.

A handler is decorated with :func:`documented` right under its route::

    @bp.post("/applications")
    @documented(
        tag=EMPLOYER,
        body=schemas.NewApplication,
        responses={201: Reply(schemas.Application, "The new draft.")},
        errors=(400, 401, 403, 415),
    )
    def create_application() -> Response:
        \"\"\"Start a draft application.\"\"\"

Its docstring gives the operation's summary (first paragraph) and description (the rest).
``ca_service.api.openapi`` walks the app's route table and reads these declarations; a route
under ``/api/v1`` without one makes the document fail to build (tests/api/test_openapi.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

JSON = dict[str, Any]
V = TypeVar("V", bound=Callable[..., Any])

# Operation tags, in the order the document lists them.
AUTHENTICATION = "authentication"
REGISTRATION = "registration"
BINDINGS = "bindings"
EMPLOYER = "employer applications"
OFFICER = "review"
PUBLIC = "public"
TAGS = (AUTHENTICATION, REGISTRATION, BINDINGS, EMPLOYER, OFFICER, PUBLIC)

# A body is a model (as JSON) or, per media type, a model or a plain JSON Schema.
Schema = type[BaseModel] | JSON
Body = type[BaseModel] | Mapping[str, Schema]


@dataclass(frozen=True)
class Reply:
    """One success answer: its body's model (None: no body) or schemas per media type."""

    model: type[BaseModel] | None
    description: str
    media: Mapping[str, Schema] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    """A handler's declaration; see :func:`documented`."""

    tag: str
    responses: Mapping[int, Reply]
    errors: tuple[int, ...]
    public: bool
    body: Body | None
    body_required: bool
    query: type[BaseModel] | None
    summary: str
    description: str


_ATTRIBUTE = "openapi_operation"


def documented(
    *,
    tag: str,
    responses: Mapping[int, Reply],
    errors: tuple[int, ...] = (),
    public: bool = False,
    body: Body | None = None,
    body_required: bool = True,
    query: type[BaseModel] | None = None,
) -> Callable[[V], V]:
    """Declare a handler's operation: its success ``responses``, the error statuses it may
    answer, whether it needs no bearer token (``public``), its request ``body`` and its
    ``query`` parameters (a model's fields)."""
    if tag not in TAGS:
        raise ValueError(f"Unknown OpenAPI tag {tag!r}; add it to TAGS.")

    def declare(view: V) -> V:
        summary, *paragraphs = inspect.cleandoc(view.__doc__ or "").split("\n\n")
        if not summary:
            raise ValueError(f"{view.__name__} needs a docstring: it is the operation's summary.")
        operation = Operation(
            tag=tag,
            responses=responses,
            errors=errors,
            public=public,
            body=body,
            body_required=body_required,
            query=query,
            summary=" ".join(summary.split()).rstrip("."),
            description="\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip()),
        )
        setattr(view, _ATTRIBUTE, operation)
        return view

    return declare


def operation_of(view: Callable[..., Any]) -> Operation | None:
    """The declaration of a view (also through the rate limiter's wrapper), if any."""
    found = getattr(view, _ATTRIBUTE, None)
    if found is None and hasattr(view, "__wrapped__"):
        return operation_of(view.__wrapped__)
    return found if isinstance(found, Operation) else None
