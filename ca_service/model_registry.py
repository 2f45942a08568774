"""Import every model module so the metadata is complete (migrations, tests)."""

from __future__ import annotations


def import_all_models() -> None:
    """Import all model modules; their classes register on ``Base.metadata``."""
    # Imported for their side effect: the classes register on Base.metadata.
    import ca_service.audit.models
    import ca_service.auth.models
    import ca_service.binding.models
    import ca_service.employers.models
    import ca_service.issuance.models
    import ca_service.models
    import ca_service.outbox.models
    import ca_service.revocation.models  # noqa: F401
