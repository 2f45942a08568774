"""Where the token is and how to log in to it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hsm.errors import PinUnavailable


@dataclass(frozen=True)
class HSMConfig:
    """Module path, token label, user PIN (never shown by repr) and session pool size."""

    module_path: str
    token_label: str
    pin: str = field(repr=False)
    pool_size: int = 4
    # Where the PIN came from ("$CA_HSM_PIN", a file path), for messages that never show it.
    pin_source: str = "the configured PIN"

    def __post_init__(self) -> None:
        if not self.token_label:
            raise ValueError("the token label must not be empty")
        if self.pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {self.pool_size}")

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

        :raises PinUnavailable: when neither gives a PIN (the message names both sources).
        """
        pin = environ.get(pin_env, "") if pin_env else ""
        problem = ""
        source = f"${pin_env}"
        if not pin and pin_file:
            source = pin_file
            try:
                # Only the line ending goes: spaces may be part of a PIN.
                pin = Path(pin_file).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                problem = f"; cannot read {pin_file}: {exc.strerror or exc}"
            else:
                problem = "" if pin else f"; {pin_file} is empty"
        if not pin:
            sources = []
            if pin_env:
                sources.append(f"${pin_env}")
            if pin_file:
                sources.append(pin_file)
            wanted = " or ".join(sources) or "a PIN environment variable or file"
            raise PinUnavailable(f"no HSM user PIN: set {wanted}{problem}")
        return cls(
            module_path=module_path,
            token_label=token_label,
            pin=pin,
            pool_size=pool_size,
            pin_source=source,
        )
