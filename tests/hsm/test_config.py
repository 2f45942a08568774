"""HSMConfig: where the PIN comes from, and that it never shows."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from hsm import HSMConfig, PinUnavailable

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def _from(pin_env: str | None, pin_file: Path | None, environ: dict[str, str]) -> HSMConfig:
    return HSMConfig.from_sources(
        module_path=MODULE,
        token_label="ca",
        pin_env=pin_env,
        pin_file=str(pin_file) if pin_file else None,
        environ=environ,
    )


def test_pin_from_environment_wins_over_file(tmp_path: Path) -> None:
    env_pin, file_pin = secrets.token_hex(8), secrets.token_hex(8)
    pin_file = tmp_path / "pin"
    pin_file.write_text(file_pin + "\n")
    assert _from("CA_PIN", pin_file, {"CA_PIN": env_pin}).pin == env_pin


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_pin_from_file_loses_only_its_line_ending(tmp_path: Path, ending: str) -> None:
    pin = f" {secrets.token_hex(8)} "  # spaces may belong to a PIN
    pin_file = tmp_path / "pin"
    pin_file.write_text(pin + ending, newline="")
    assert _from("CA_PIN", pin_file, {"CA_PIN": ""}).pin == pin


def test_no_pin_names_both_sources(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(PinUnavailable, match=r"\$CA_PIN or .*missing.*cannot read"):
        _from("CA_PIN", missing, {})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(PinUnavailable, match="is empty"):
        _from(None, empty, {})
    with pytest.raises(PinUnavailable, match="no HSM user PIN"):
        _from(None, None, {})


def test_repr_never_shows_the_pin() -> None:
    pin = secrets.token_hex(8)
    config = HSMConfig(module_path=MODULE, token_label="ca", pin=pin)
    assert pin not in repr(config)
    assert pin not in str(config)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        HSMConfig(module_path=MODULE, token_label="ca", pin="x", pool_size=0)
    with pytest.raises(ValueError, match="label"):
        HSMConfig(module_path=MODULE, token_label="", pin="x")
