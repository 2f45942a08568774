"""Where the token is and how to log in to it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hsm.errors import PinUnavailable


@dataclass(frozen=True)
class HSMConfig:
    """Module path, token label and user PIN (never shown by repr)."""

    module_path: str
    token_label: str
    pin: str = field(repr=False)
    pool_size: int = 4

    @classmethod
    def from_sources(
        cls,
        *,
        module_path: str,
        token_label: str,
        pin_env: str | None,
        pin_file: str | None,
        environ: Mapping[str, str],
        pool_size: int = 4,
    ) -> HSMConfig:
        """Take the PIN from the environment variable ``pin_env``, else from ``pin_file``.

        :raises PinUnavailable: when neither gives a PIN.
        """
        pin = environ.get(pin_env) if pin_env else None
        if not pin and pin_file:
            try:
                pin = Path(pin_file).read_text().strip()
            except OSError:
                pin = None
        if not pin:
            sources = " or ".join(
                s for s in (f"${pin_env}" if pin_env else "", pin_file or "") if s
            )
            raise PinUnavailable(f"no HSM PIN: set {sources or 'a PIN source'}")
        return cls(module_path=module_path, token_label=token_label, pin=pin, pool_size=pool_size)
