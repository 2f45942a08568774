"""SoftHSM provisioning helpers."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pytest

from hsm import (
    HSMError,
    delete_softhsm_token,
    find_softhsm_module,
    init_softhsm_token,
    softhsm_token_exists,
    write_softhsm_config,
)
from tests.hsm.support import SoftHSMSetup


def test_module_is_found() -> None:
    module = find_softhsm_module()
    assert module is not None
    assert Path(module).is_file()


def test_config_keeps_tokens_private(tmp_path: Path) -> None:
    conf = write_softhsm_config(tmp_path / "softhsm")
    text = conf.read_text()
    tokens = tmp_path / "softhsm" / "tokens"
    assert f"directories.tokendir = {tokens}\n" in text
    assert "objectstore.backend = file\n" in text
    assert "log.level = ERROR\n" in text
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o700
    assert stat.S_IMODE(conf.parent.stat().st_mode) == 0o700


def test_init_is_idempotent_and_delete_removes(softhsm: SoftHSMSetup) -> None:
    label = f"prov-{secrets.token_hex(4)}"
    assert not softhsm_token_exists(softhsm.conf, label)
    init_softhsm_token(softhsm.conf, label, secrets.token_hex(8), secrets.token_hex(8))
    # A second run with other PINs changes nothing (and so does not fail).
    init_softhsm_token(softhsm.conf, label, secrets.token_hex(8), secrets.token_hex(8))
    assert softhsm_token_exists(softhsm.conf, label)
    delete_softhsm_token(softhsm.conf, label)
    assert not softhsm_token_exists(softhsm.conf, label)


def test_rejected_pin_is_reported_without_the_pin(softhsm: SoftHSMSetup) -> None:
    label = f"prov-{secrets.token_hex(4)}"
    short_pin = "~" + secrets.token_hex(1)  # SoftHSM wants 4 to 255 characters
    with pytest.raises(HSMError, match="out of range") as caught:
        init_softhsm_token(softhsm.conf, label, short_pin, secrets.token_hex(8))
    assert short_pin not in str(caught.value)
    assert not softhsm_token_exists(softhsm.conf, label)


def test_missing_tool_is_explained(
    softhsm: SoftHSMSetup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HSMError, match=r"softhsm2-util not found.*install the softhsm2 package"):
        init_softhsm_token(softhsm.conf, "any", secrets.token_hex(8), secrets.token_hex(8))
