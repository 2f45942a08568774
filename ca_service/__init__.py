"""Employer PKI and certificate authority service."""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# pyHanko (0.38) imports cryptography's DSA types, which cryptography 51 deprecates with a
# warning on every start of every command; we never use DSA. Installed before anything imports
# pyHanko, so the CLI's one-line errors stay one line. Drop when pyHanko stops importing them.
warnings.filterwarnings(
    "ignore", message="DSA is deprecated", category=CryptographyDeprecationWarning
)

from ca_service.app import create_app  # noqa: E402

__all__ = ["create_app"]
