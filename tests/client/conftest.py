"""Fixtures of the client tests: an employer token ("UKey") per test and the CLI runner."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result

from ca_client.cli import main
from hsm import HSMConfig, Token, find_softhsm_module

if TYPE_CHECKING:
    from tests.conftest import HsmEnv


@dataclass(frozen=True)
class UKey:
    """An employer's token: its label and user PIN."""

    label: str
    pin: str


ClientRun = Callable[..., Result]


@pytest.fixture
def ukey(hsm_env: HsmEnv) -> UKey:
    label, pin = hsm_env.new_token("ukey")
    return UKey(label=label, pin=pin)


@pytest.fixture
def ukey_token(ukey: UKey) -> Iterator[Token]:
    """The test's own handle on the UKey, to check what the commands did."""
    module = find_softhsm_module()
    assert module is not None
    token = Token(HSMConfig(module_path=module, token_label=ukey.label, pin=ukey.pin))
    yield token
    token.close()


@pytest.fixture
def run(ukey: UKey) -> ClientRun:
    """Run `ca-client ARGS...` in-process with the UKey's PIN in $CA_CLIENT_PIN."""
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
        # None unsets a variable: the developer's own CA_CLIENT_* settings must not leak in.
        base: dict[str, str | None] = {
            "CA_CLIENT_PIN": ukey.pin,
            "CA_CLIENT_MODULE": None,
            "CA_CLIENT_PASSPHRASE": None,
        }
        return runner.invoke(main, list(args), env={**base, **(env or {})})

    return invoke
