"""Real SoftHSM tokens for the hsm tests: one SoftHSM set-up per test session.

SoftHSM reads SOFTHSM2_CONF once per process, when python-pkcs11 first initialises it, so the
whole test session shares one configuration: the one a higher-level conftest (or the caller's
environment) named in SOFTHSM2_CONF, or else one made here. Every token gets a random label,
SO PIN and user PIN per run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsm import (
    KeyAlgorithm,
    Token,
    delete_softhsm_token,
    find_softhsm_module,
    write_softhsm_config,
)
from tests.hsm.support import SoftHSMSetup


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSMSetup]:
    """The SoftHSM set-up shared by every test of the session."""
    module = find_softhsm_module()
    if module is None:
        pytest.fail("SoftHSM2 is not installed: apt-get install softhsm2")
    preset = os.environ.get("SOFTHSM2_CONF")
    if preset:
        conf = Path(preset)
    else:
        conf = write_softhsm_config(tmp_path_factory.mktemp("softhsm"))
        os.environ["SOFTHSM2_CONF"] = str(conf)
    setup = SoftHSMSetup(conf=conf, module=module)
    yield setup
    if preset:
        # Someone else's set-up, perhaps a developer's own SoftHSM: leave it as it was found.
        for label in setup.created:
            delete_softhsm_token(conf, label)
    else:
        del os.environ["SOFTHSM2_CONF"]


@pytest.fixture(scope="session")
def token(softhsm: SoftHSMSetup) -> Iterator[Token]:
    """A token with fewer pooled sessions than the concurrency tests have threads."""
    token = Token(softhsm.config("keys", pool_size=3))
    yield token
    token.close()


@pytest.fixture(scope="session")
def keys(token: Token) -> dict[KeyAlgorithm, str]:
    """One key per algorithm, by label (RSA-4096 is slow to generate in SoftHSM: made once)."""
    labels = {}
    for algorithm in KeyAlgorithm:
        label = f"{algorithm.value}-{secrets.token_hex(3)}"
        token.generate_key(label, algorithm)
        labels[algorithm] = label
    return labels
