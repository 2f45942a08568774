"""Import every model module so the metadata is complete (migrations, tests)."""

from __future__ import annotations


def import_all_models() -> None:
    """Import all model modules; their classes register on ``Base.metadata``."""
    import ca_service.audit.models
    import ca_service.auth.models
    import ca_service.models
    import ca_service.revocation.models  # noqa: F401  (imported for its side effect: registration)
