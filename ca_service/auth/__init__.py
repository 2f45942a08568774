"""Accounts, sign-in (password, TOTP), roles.

Other packages use ``require_role`` on views and ``ensure_role`` in services; accounts are made
with ``ca_service.auth.service.create_user``.
"""

from __future__ import annotations

from ca_service.auth.access import ensure_role, require_role
from ca_service.auth.models import Role, User

__all__ = ["Role", "User", "ensure_role", "require_role"]
