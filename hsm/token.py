"""A per-process, thread-safe handle on one PKCS#11 token.

PKCS#11 state (module initialisation, login, sessions, object handles) belongs to one process,
which the standard calls an application. Three consequences shape this module:

* **fork**: a gunicorn worker is forked from a master that may already have used the token. The
  child must call C_Initialize itself and must neither use nor close the parent's sessions
  (closing them, or C_Finalize, could end them on the token for the parent too). Real HSMs
  refuse a parent's session in a child; SoftHSM tolerates it, so the PID check here is explicit
  rather than left to luck.
* **threads**: python-pkcs11 0.10 initialises modules with C_Initialize(NULL), which tells the
  module that the application will never call it from two threads at once; SoftHSM then runs
  without internal locks and crashes (double free, segfault) when it is called concurrently.
  Every call into a module is therefore serialised by that module's lock. Threads still get
  sessions from a pool: a session carries an operation's state and this session's key handles,
  and a broken one is replaced without disturbing the others.
* **login**: login state is shared by all sessions of a process on a token, a second C_Login
  fails with CKR_USER_ALREADY_LOGGED_IN, and closing the last session logs the process out. So
  the process logs in once, on an "anchor" session that is never pooled nor closed before
  ``Token.close``; pooled sessions are opened without a PIN. (python-pkcs11's ``Session.close``
  calls C_Logout for a session opened with a PIN, which would log every other session out: one
  more reason to keep that session out of the pool.)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import pkcs11
import pkcs11._pkcs11 as pkcs11_native
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import MGF, Attribute, CertificateType, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.types import PublicKey as P11PublicKey
from pkcs11.types import Session, SignMixin
from pkcs11.types import Token as SlotToken
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
from pkcs11.util.x509 import decode_x509_certificate

from hsm.config import HSMConfig
from hsm.errors import (
    DuplicateCertificateLabel,
    DuplicateKeyLabel,
    HSMError,
    HSMUnavailable,
    KeyNotFound,
    PinLocked,
    PKCS11ModuleNotFound,
    SessionLost,
    TokenNotFound,
    TokenNotPresent,
    WrongPin,
)
from hsm.keys import KeyAlgorithm
from hsm.signers import HSMECPrivateKey, HSMPrivateKey, HSMRSAPrivateKey, SignatureScheme

T = TypeVar("T")
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
Library: TypeAlias = pkcs11_native.lib

# Attributes of every generated key pair. Both halves are token objects sharing a label and a
# random CKA_ID. The private half can only sign: no decryption, unwrapping or derivation, and
# SENSITIVE/EXTRACTABLE make its secret unreadable for ever (the token then also reports
# ALWAYS_SENSITIVE and NEVER_EXTRACTABLE). MODIFIABLE false stops someone holding the PIN from
# switching those capabilities on later.
_PRIVATE_TEMPLATE: dict[Attribute, Any] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.MODIFIABLE: False,
    Attribute.SIGN: True,
    Attribute.SIGN_RECOVER: False,
    Attribute.DECRYPT: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}
_PUBLIC_TEMPLATE: dict[Attribute, Any] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: False,
    Attribute.MODIFIABLE: False,
    Attribute.VERIFY: True,
    Attribute.VERIFY_RECOVER: False,
    Attribute.ENCRYPT: False,
    Attribute.WRAP: False,
    Attribute.DERIVE: False,
}
_RSA_PUBLIC_EXPONENT = (65537).to_bytes(3, "big")

# DER DigestInfo prefixes (RFC 8017 §9.2, note 1) for RSA PKCS#1 v1.5 over a host-side digest.
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
}
# CK_RSA_PKCS_PSS_PARAMS (hashAlg, mgf, sLen), always explicit: with no parameters
# python-pkcs11 falls back to SHA-1 defaults, which would not match the certificate's parameters.
_PSS_PARAMS = {
    "sha256": (Mechanism.SHA256, MGF.SHA256, 32),
    "sha384": (Mechanism.SHA384, MGF.SHA384, 48),
}

# Errors after which a session cannot be used again: the operation is retried once on a
# freshly opened session (and a fresh login where the login went too).
_SESSION_GONE: tuple[type[p11.PKCS11Error], ...] = (
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.DeviceRemoved,
    p11.DeviceError,
    p11.TokenNotPresent,
    p11.ObjectHandleInvalid,
    p11.KeyHandleInvalid,
)


class _Lost(Exception):
    """A session, the login or the module state went away under an operation."""

    def __init__(
        self,
        reason: str,
        *,
        login_gone: bool = False,
        module_down: bool = False,
        key_gone: str | None = None,
    ):
        super().__init__(reason)
        self.reason = reason
        self.login_gone = login_gone
        self.module_down = module_down
        # The label of a key this process had found and that is gone now: SoftHSM shows a
        # removed token directory as an empty token until the module is re-initialised.
        self.key_gone = key_gone
        # What the failed attempt worked with, so that of several threads failing together
        # only the first re-initialises the module or logs in again.
        self.generation: int | None = None
        self.login: _Login | None = None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _bare_pkcs11_error(exc: BaseException, words: str) -> bool:
    # python-pkcs11 0.10 has no classes for CKR_CRYPTOKI_NOT_INITIALIZED and
    # CKR_CRYPTOKI_ALREADY_INITIALIZED: it raises a bare PKCS11Error with a fixed text.
    return type(exc) is p11.PKCS11Error and words in str(exc)


def _as_lost(exc: p11.PKCS11Error) -> _Lost | None:
    if isinstance(exc, _SESSION_GONE):
        return _Lost(_describe(exc))
    if isinstance(exc, p11.UserNotLoggedIn):
        return _Lost(_describe(exc), login_gone=True)
    if _bare_pkcs11_error(exc, "not initialized"):
        return _Lost("CKR_CRYPTOKI_NOT_INITIALIZED", module_down=True)
    return None


# -- modules: one state per module file and process ---------------------------------------------


@dataclass(eq=False)
class _Login:
    """This process's login to one token."""

    anchor: Session | None
    pin_digest: bytes = field(repr=False)
    users: weakref.WeakSet[Token]


@dataclass(eq=False)
class _Module:
    """A PKCS#11 module as initialised in one process."""

    path: str
    lib: Library
    pid: int
    how: str  # how this process initialised it; tests and diagnostics read it
    lock: threading.RLock = field(default_factory=threading.RLock)
    generation: int = 0  # bumped by every re-initialisation, which ends all sessions and logins
    logins: dict[str, _Login] = field(default_factory=dict)
    rescanned_at: float = float("-inf")  # time.monotonic() of the last rescan for a lost token


_modules: dict[str, _Module] = {}  # by the real path of the module file
_registry_lock = threading.Lock()
_inherited_libs: list[Library] = []  # python-pkcs11 lib objects an ancestor process initialised
# Lib objects replaced after a fork. They must never be garbage-collected: python-pkcs11's
# __dealloc__ calls C_Finalize, which would undo this process's own initialisation.
_retired_libs: list[Library] = []
_tokens: weakref.WeakSet[Token] = weakref.WeakSet()

# A token that went away is looked for again (C_Finalize + C_Initialize, the only way SoftHSM
# rereads its token directory) at most this often per module, so that an outage costs one
# re-initialisation a second and not one per request.
RESCAN_INTERVAL = 1.0

# PINs a token refused in this process, by (module file, token label): never offered again.
# The PIN is read once at start-up, so a second attempt with it can only fail again, and every
# failure counts towards the token locking its user PIN (a real HSM after three to ten).
_refused_pins: dict[tuple[str, str], tuple[bytes, HSMError]] = {}
_login_attempts: dict[tuple[str, str], int] = {}


def _copy_error(error: HSMError) -> HSMError:
    # A new object each time: raising one stored exception again would grow its traceback.
    copy = type(error).__new__(type(error))
    copy.args = error.args
    return copy


def login_attempts(module_path: str, token_label: str) -> int:
    """How many times this process has called C_Login on the token (diagnostics, tests)."""
    return _login_attempts.get((os.path.realpath(module_path), token_label), 0)


def _after_fork_in_child() -> None:
    global _registry_lock  # noqa: PLW0603  (a lock held by another parent thread stays held here)
    _registry_lock = threading.Lock()
    # Whatever python-pkcs11 loaded so far was initialised by the parent, through this layer or
    # not; it is re-initialised on first use here.
    _inherited_libs[:] = list(pkcs11._loaded.values())
    for token in list(_tokens):
        token._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _loaded_lib(real_path: str) -> Library | None:
    """The python-pkcs11 lib object of this module file, under whatever spelling it was loaded."""
    for path, lib in list(pkcs11._loaded.items()):
        if os.path.realpath(path) == real_path:
            loaded: Library = lib
            return loaded
    return None


def _initialise(path: str, lib: Library) -> None:
    try:
        lib.initialize()
    except p11.PKCS11Error as exc:
        raise HSMUnavailable(
            f"PKCS#11 module {path} failed to initialise ({_describe(exc)}); "
            "for SoftHSM check SOFTHSM2_CONF and its token directory"
        ) from None


def _initialise_after_fork(path: str, inherited: Library) -> tuple[Library, str]:
    """C_Initialize in a forked child without touching the parent's sessions."""
    _inherited_libs[:] = [lib for lib in _inherited_libs if lib is not inherited]
    # The PKCS#11 usage guide (§6.5.1) has a child call C_Initialize and nothing else: C_Finalize
    # might tear down state the module shares with the parent (a network HSM's connection) and
    # log the parent out. python-pkcs11's lib.reinitialize() would call C_Finalize first; a new
    # lib object calls C_Initialize alone.
    try:
        fresh = pkcs11_native.lib(path)
    except p11.PKCS11Error as exc:
        if not _bare_pkcs11_error(exc, "already initialized"):
            raise HSMUnavailable(
                f"PKCS#11 module {path} failed to initialise in a forked process ({_describe(exc)})"
            ) from None
        # The module did not notice the fork (SoftHSM does not): its state in this process is
        # a private copy of the parent's, so C_Finalize here frees only that copy.
        with contextlib.suppress(p11.PKCS11Error):
            inherited.finalize()
        _initialise(path, inherited)
        return inherited, "C_Finalize+C_Initialize after fork"
    _retired_libs.append(inherited)
    for key, value in list(pkcs11._loaded.items()):
        if value is inherited:
            pkcs11._loaded[key] = fresh
    return fresh, "C_Initialize after fork"


def _load(path: str, real_path: str) -> tuple[Library, str]:
    if not Path(path).is_file():
        raise PKCS11ModuleNotFound(path, "no such file")
    lib = _loaded_lib(real_path)
    how = "C_Initialize"
    if lib is not None and any(lib is old for old in _inherited_libs):
        lib, how = _initialise_after_fork(path, lib)
    elif lib is not None:
        if not lib.initialized:
            _initialise(path, lib)
    else:
        try:
            lib = pkcs11.lib(path)
        except p11.PKCS11Error as exc:
            if "while loading" in str(exc):  # dlopen or C_GetFunctionList failed
                raise PKCS11ModuleNotFound(path, str(exc).split(": ", 1)[-1]) from None
            raise HSMUnavailable(
                f"PKCS#11 module {path} failed to initialise ({_describe(exc)}); "
                "for SoftHSM check SOFTHSM2_CONF and its token directory"
            ) from None
    # One lib object per module file whatever the spelling of its path: python-pkcs11 caches
    # by the string, and a second object's C_Initialize fails (CKR_CRYPTOKI_ALREADY_INITIALIZED).
    pkcs11._loaded[path] = lib
    pkcs11._loaded[real_path] = lib
    return lib, how


@functools.lru_cache(maxsize=32)
def _resolved(path: str) -> str:
    # Every session checkout asks for its module: resolving the path on the file system each
    # time was a large share of a signature's Python time. A module file that moves while the
    # process runs is not a case worth a system call per signature.
    return os.path.realpath(path)


def _module_for(path: str) -> _Module:
    """This process's state of the module at ``path``, loading or re-initialising it as needed."""
    real_path = _resolved(path)
    pid = os.getpid()
    with _registry_lock:
        module = _modules.get(real_path)
        if module is not None and module.pid == pid:
            return module
        lib, how = _load(path, real_path)
        module = _modules[real_path] = _Module(path=path, lib=lib, pid=pid, how=how)
        return module


class _UserPinUnset(HSMUnavailable):
    """C_Login said the token has no user PIN (``Token._log_in_rereading``)."""


def _reinitialise(module: _Module) -> None:
    """C_Finalize and C_Initialize; called with ``module.lock`` held. Ends every session."""
    module.rescanned_at = time.monotonic()
    module.generation += 1
    module.logins.clear()
    with contextlib.suppress(p11.PKCS11Error):
        module.lib.finalize()  # fails if someone finalised the module already; fine
    module.lib.initialize()


def rescan_tokens(module_path: str) -> None:
    """Re-initialise a loaded module so that it sees tokens created since it was initialised.

    SoftHSM reads its token directory only in C_Initialize. Every session and login of this
    process on the module ends; each ``Token`` reopens its sessions and logs in on next use.
    Nothing happens when the module is not loaded in this process.

    :raises HSMUnavailable: when the module fails to initialise again.
    """
    if _loaded_lib(os.path.realpath(module_path)) is None:
        return
    module = _module_for(module_path)
    with module.lock:
        try:
            _reinitialise(module)
        except p11.PKCS11Error as exc:
            raise HSMUnavailable(
                f"PKCS#11 module {module_path} failed to re-initialise ({_describe(exc)})"
            ) from None


# -- tokens -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyHandle:
    """A key pair in the token: its label, its CKA_ID (shared by both halves) and algorithm."""

    label: str
    key_id: bytes
    algorithm: KeyAlgorithm


@dataclass(eq=False)
class _PooledSession:
    session: Session
    module: _Module
    generation: int  # the module generation it was opened in
    epoch: int  # the Token's pool epoch it belongs to
    # Private key objects as found through this session: python-pkcs11 binds an object to the
    # session that found it, and a session's handles die with it, so the cache lives here.
    private_keys: dict[str, SignMixin] = field(default_factory=dict)


def _algorithm_of(label: str, key: Any) -> KeyAlgorithm:
    if key.key_type == KeyType.RSA:
        bits = int.from_bytes(key[Attribute.MODULUS], "big").bit_length()
        with contextlib.suppress(ValueError):
            return KeyAlgorithm(f"rsa-{bits}")
        raise HSMError(f"key {label!r} is RSA-{bits}, which this layer does not sign with")
    if key.key_type == KeyType.EC:
        params = bytes(key[Attribute.EC_PARAMS])
        for algorithm in (KeyAlgorithm.EC_P256, KeyAlgorithm.EC_P384):
            if params == encode_named_curve_parameters(algorithm.curve_name):
                return algorithm
        raise HSMError(f"key {label!r} is on a curve this layer does not sign with")
    raise HSMError(f"key {label!r} is a {key.key_type.name} key, which this layer does not use")


def _certificates_labelled(session: Session, label: str) -> list[Any]:
    return list(
        session.get_objects(
            {
                Attribute.CLASS: ObjectClass.CERTIFICATE,
                Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                Attribute.LABEL: label,
            }
        )
    )


def _der_ecdsa(raw: bytes, algorithm: KeyAlgorithm) -> bytes:
    # PKCS#11 returns ECDSA signatures as r || s, each as long as the field; X.509 wants DER.
    half = 48 if algorithm is KeyAlgorithm.EC_P384 else 32
    if len(raw) != 2 * half:
        raise HSMUnavailable(f"the token returned a {len(raw)}-byte ECDSA signature")
    return encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )


class Token:
    """Thread-safe access to one token for this process: keys, signing, certificates."""

    def __init__(self, config: HSMConfig) -> None:
        self.config = config
        # Nothing touches the module before first use: constructing a Token is free.
        self._cond = threading.Condition()
        self._generate_lock = threading.Lock()
        self._certificate_lock = threading.Lock()
        self._module: _Module | None = None
        self._generation = -1
        self._slot_token: SlotToken | None = None
        self._epoch = 0
        self._idle: list[_PooledSession] = []
        self._open = 0  # sessions of the current epoch: idle, lent out, or being opened
        # Pure data, valid in every session and process, so cached for the Token's lifetime.
        self._handles: dict[str, KeyHandle] = {}
        self._public_keys: dict[str, PublicKey] = {}
        # Labels of keys found in the token at some point: one missing now means the token
        # (its storage) went away, not a set-up mistake, until a rescan says otherwise.
        self._known_labels: set[str] = set()
        _tokens.add(self)

    @property
    def label(self) -> str:
        """The token's label."""
        return self.config.token_label

    def __repr__(self) -> str:
        return f"<Token {self.label!r} module={self.config.module_path}>"

    def _after_fork_in_child(self) -> None:
        # Locks held by the parent's other threads at fork time would stay held for ever here.
        self._cond = threading.Condition()
        self._generate_lock = threading.Lock()
        self._certificate_lock = threading.Lock()

    # -- sessions ----------------------------------------------------------------------------

    def _bind(self) -> tuple[_Module, SlotToken]:
        """Attach to the module and token as they are in this process now; ``_cond`` held."""
        module = _module_for(self.config.module_path)
        if (
            module is self._module
            and module.generation == self._generation
            and self._slot_token is not None
        ):
            if not module.lib.initialized:
                raise self._module_down(module)
            return module, self._slot_token
        # A forked child, a re-initialised module or a closed Token: the pooled sessions are
        # dead or the parent's. They are dropped and never closed, so a child cannot end a
        # parent's session on the token.
        self._idle = []
        self._open = 0
        self._epoch += 1
        self._cond.notify_all()
        with module.lock:
            if not module.lib.initialized:
                raise self._module_down(module)
            try:
                slot_token = self._find_slot_token(module)
            except p11.MultipleTokensReturned:
                raise HSMError(
                    f"several tokens are labelled {self.label!r}: give each a unique label"
                ) from None
        self._module, self._generation, self._slot_token = module, module.generation, slot_token
        return module, slot_token

    def _find_slot_token(self, module: _Module) -> SlotToken:
        """The token as the module lists it, rescanning once if it is missing; lock held.

        :raises TokenNotPresent: when a token this Token used before is not there (any more).
        :raises TokenNotFound: when the token was never seen by this Token.
        """
        try:
            return module.lib.get_token(token_label=self.label)
        except p11.NoSuchToken:
            pass
        if time.monotonic() - module.rescanned_at >= RESCAN_INTERVAL:
            # Maybe it is back (or was created since): only a re-initialisation shows it.
            try:
                _reinitialise(module)
                return module.lib.get_token(token_label=self.label)
            except p11.NoSuchToken:
                pass
            except p11.PKCS11Error as exc:
                raise HSMUnavailable(
                    f"PKCS#11 module {self.config.module_path} failed to re-initialise "
                    f"({_describe(exc)})"
                ) from None
        if self._known_labels:
            raise TokenNotPresent(self.label)
        raise TokenNotFound(self.label)

    @staticmethod
    def _module_down(module: _Module) -> _Lost:
        lost = _Lost("the PKCS#11 module was finalised", module_down=True)
        lost.generation = module.generation
        return lost

    def _log_in(self, module: _Module, slot_token: SlotToken) -> None:
        """Log this process in to the token unless it is already; ``module.lock`` held."""
        digest = hashlib.sha256(self.config.pin.encode()).digest()
        login = module.logins.get(self.label)
        if login is not None:
            # Login state is per process: without this check a Token configured with a wrong
            # PIN would quietly ride on another Token's login until the next restart.
            if not hmac.compare_digest(login.pin_digest, digest):
                raise WrongPin(
                    self.label,
                    "the PIN differs from the one this process logged in with",
                    source=self.config.pin_source,
                )
            login.users.add(self)
            return
        key = (_resolved(self.config.module_path), self.label)
        refused = _refused_pins.get(key)
        if refused is not None and hmac.compare_digest(refused[0], digest):
            # Refused before: an error again, without spending one more of the token's tries.
            raise _copy_error(refused[1])
        try:
            anchor = self._c_login(slot_token, key)
        except PinLocked as exc:
            _refused_pins[key] = (digest, _copy_error(exc))
            raise
        except WrongPin:
            _refused_pins[key] = (
                digest,
                WrongPin(
                    self.label,
                    "the token rejected this PIN before, and it is not offered again so as "
                    "not to lock the token: correct the PIN and restart",
                    source=self.config.pin_source,
                ),
            )
            raise
        module.logins[self.label] = _Login(anchor, digest, weakref.WeakSet([self]))

    def _c_login(self, slot_token: SlotToken, key: tuple[str, str]) -> Session | None:
        """Open the anchor session with the PIN: the only C_Login of this layer."""
        _login_attempts[key] = _login_attempts.get(key, 0) + 1
        source = self.config.pin_source
        anchor: Session | None
        try:
            anchor = slot_token.open(user_pin=self.config.pin)
        except p11.UserAlreadyLoggedIn:
            # Logged in by code outside this layer. python-pkcs11 leaves this attempt's session
            # open (it keeps no handle to close it by), which holds the login as an anchor would.
            anchor = None
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
            raise WrongPin(self.label, source=source) from None
        except p11.PinExpired:
            raise WrongPin(
                self.label, "the PIN has expired and must be changed", source=source
            ) from None
        except p11.PinLocked:
            raise PinLocked(self.label) from None
        except p11.UserPinNotInitialized:
            raise _UserPinUnset(
                f"token {self.label!r} has no user PIN yet: the security officer must set one"
            ) from None
        return anchor

    def _log_in_rereading(self, module: _Module, slot_token: SlotToken) -> SlotToken:
        """``_log_in``; lock held. A token this process has used says "no user PIN" when
        SoftHSM read its file while another process rewrote it (a C_Login rewrites the token's
        flags; seen under load with several workers starting at once), and the module keeps
        that reading until it is initialised again: so re-read once (at most once per
        RESCAN_INTERVAL) and log in again. The token's slot after the re-read is returned.

        :raises HSMUnavailable: the token still has no user PIN.
        """
        try:
            self._log_in(module, slot_token)
            return slot_token
        except _UserPinUnset:
            if time.monotonic() - module.rescanned_at < RESCAN_INTERVAL:
                raise
        try:
            _reinitialise(module)
            slot_token = module.lib.get_token(token_label=self.label)
        except p11.PKCS11Error as exc:
            raise HSMUnavailable(
                f"PKCS#11 module {self.config.module_path} failed to re-initialise "
                f"({_describe(exc)})"
            ) from None
        self._log_in(module, slot_token)
        return slot_token

    def _checkout(self) -> _PooledSession:
        with self._cond:
            while True:
                module, slot_token = self._bind()
                if self._idle:
                    return self._idle.pop()
                if self._open < self.config.pool_size:
                    self._open += 1
                    epoch = self._epoch
                    break
                self._cond.wait()
        # Opened outside ``_cond``, so that threads returning sessions are not held up.
        try:
            with module.lock:
                if not module.lib.initialized:
                    raise self._module_down(module)
                slot_token = self._log_in_rereading(module, slot_token)
                session = slot_token.open(rw=True)
                generation = module.generation
        except BaseException:
            with self._cond:
                if epoch == self._epoch:
                    self._open -= 1
                self._cond.notify()
            raise
        return _PooledSession(session=session, module=module, generation=generation, epoch=epoch)

    def _checkin(self, pooled: _PooledSession, healthy: bool) -> None:
        with self._cond:
            if pooled.epoch == self._epoch:
                if healthy:
                    self._idle.append(pooled)
                    self._cond.notify()
                    return
                self._open -= 1
            self._cond.notify()
        self._discard([pooled])

    @staticmethod
    def _discard(sessions: Iterable[_PooledSession]) -> None:
        """Close sessions this process opened in the module's current state; drop the rest."""
        for pooled in sessions:
            module = pooled.module
            if module.pid != os.getpid():
                continue  # the parent's: never closed from a child
            with module.lock:
                if pooled.generation != module.generation or not module.lib.initialized:
                    continue  # already ended by a re-initialisation
                # Opened without a PIN, so close() is a plain C_CloseSession (no C_Logout).
                with contextlib.suppress(p11.PKCS11Error):
                    pooled.session.close()

    def _attempt(self, operation: Callable[[_PooledSession], T]) -> T:
        pooled: _PooledSession | None = None
        healthy = True
        try:
            pooled = self._checkout()
            with pooled.module.lock:
                return operation(pooled)
        except p11.PKCS11Error as exc:
            lost = _as_lost(exc)
            if lost is None:
                raise HSMUnavailable(f"token {self.label!r}: {_describe(exc)}") from exc
            healthy = False
            module = pooled.module if pooled is not None else self._module
            if module is not None:
                lost.generation = pooled.generation if pooled is not None else module.generation
                lost.login = module.logins.get(self.label)
            raise lost from exc
        finally:
            if pooled is not None:
                self._checkin(pooled, healthy)

    def _recover(self, lost: _Lost) -> bool:
        """Drop every pooled session, and the login or the module state if those went too.
        For a key gone: whether the module's token list is newer than the loss (rescanned now
        or by another thread since), so that a retry that still misses the key is conclusive."""
        with self._cond:
            stale, self._idle = self._idle, []
            self._open = 0
            self._epoch += 1  # sessions lent out now are discarded when they come back
            self._cond.notify_all()
        self._discard(stale)
        module = _module_for(self.config.module_path)
        with module.lock:
            if lost.key_gone is not None:
                if module.generation != lost.generation:
                    return True  # another thread rescanned since the loss
                if time.monotonic() - module.rescanned_at < RESCAN_INTERVAL:
                    return False  # rescanned too recently to ask the module again
                with contextlib.suppress(p11.PKCS11Error):
                    _reinitialise(module)  # a failure shows on the retry's _bind
                return True
            if lost.module_down:
                if module.generation != lost.generation and module.lib.initialized:
                    return True  # another thread re-initialised it meanwhile
                try:
                    _reinitialise(module)
                except p11.PKCS11Error as exc:
                    raise _Lost(f"re-initialising the module failed: {_describe(exc)}") from exc
                return True
            login = module.logins.get(self.label)
            if (
                login is not None
                and login is lost.login  # not a login another thread has made since
                and (lost.login_gone or not self._anchor_alive(login))
            ):
                del module.logins[self.label]
            return True

    @staticmethod
    def _anchor_alive(login: _Login) -> bool:
        # If every session of the process was closed (an HSM restart, C_CloseAllSessions), the
        # anchor went too and with it the login; a cheap call on it tells.
        if login.anchor is None:
            return True
        try:
            login.anchor.generate_random(64)
        except p11.PKCS11Error as exc:
            return _as_lost(exc) is None
        return True

    def _run(self, operation: Callable[[_PooledSession], T]) -> T:
        """Run ``operation`` on a pooled session; a lost session is reopened once.

        :raises SessionLost: when the operation fails again after reopening, or reopening fails.
        """
        try:
            return self._attempt(operation)
        except _Lost as lost:
            first = lost
        rescanned = False
        try:
            rescanned = self._recover(first)
            return self._attempt(operation)
        except _Lost as lost:
            if lost.key_gone is not None and first.key_gone is None:
                # Reopening showed a key gone that the broken session hid: one rescan more,
                # which tells a token that went away (503) from a deleted key.
                try:
                    rescanned = self._recover(lost)
                    return self._attempt(operation)
                except _Lost as again:
                    lost = again
            if lost.key_gone is not None and not rescanned:
                # The module was rescanned too recently to be asked again: the token may have
                # gone a moment ago, so "try later" (503), never a set-up error (500) yet.
                raise TokenNotPresent(self.label) from None
            if lost.key_gone is not None:
                # The token is there after a rescan, and the key is not: deleted or replaced.
                self._forget(lost.key_gone)
                self._known_labels.discard(lost.key_gone)
                raise KeyNotFound(lost.key_gone) from None
            raise SessionLost(self.label, lost.reason) from lost.__cause__

    def check_login(self) -> None:
        """Log in now (once), so that a wrong PIN shows at start-up rather than per request.

        :raises WrongPin: when the token refuses the PIN; the process never offers it again.
        """
        self._run(lambda pooled: None)

    def close(self) -> None:
        """Close this process's sessions; the last Token of a token also logs the process out."""
        with self._cond:
            module = self._module
            stale, self._idle = self._idle, []
            self._open = 0
            self._epoch += 1
            self._module, self._slot_token, self._generation = None, None, -1
            self._cond.notify_all()
        if module is None or module.pid != os.getpid():
            return  # nothing opened yet, or the parent's sessions: never closed from a child
        self._discard(stale)
        with module.lock:
            login = module.logins.get(self.label)
            if login is None:
                return
            login.users.discard(self)
            if login.users:
                return  # other Tokens of this process still rely on the login
            del module.logins[self.label]
            if login.anchor is not None and module.lib.initialized:
                with contextlib.suppress(p11.PKCS11Error):
                    login.anchor.close()  # C_Logout, then C_CloseSession

    # -- keys --------------------------------------------------------------------------------

    def _forget(self, label: str) -> None:
        self._handles.pop(label, None)
        self._public_keys.pop(label, None)

    def _private_key_object(self, pooled: _PooledSession, handle: KeyHandle) -> SignMixin:
        key = pooled.private_keys.get(handle.label)
        if key is not None:
            return key
        try:
            found = pooled.session.get_key(
                object_class=ObjectClass.PRIVATE_KEY, label=handle.label, id=handle.key_id
            )
        except p11.NoSuchKey:
            lost = _Lost(f"key {handle.label!r} vanished", key_gone=handle.label)
            lost.generation = pooled.generation
            raise lost from None
        if not isinstance(found, SignMixin):
            raise HSMError(f"key {handle.label!r} cannot sign")
        pooled.private_keys[handle.label] = found
        return found

    def find_key(self, label: str) -> KeyHandle:
        """The key pair with this label.

        :raises KeyNotFound: when the token holds no private key with this label.
        """
        cached = self._handles.get(label)
        if cached is not None:
            return cached

        def describe(pooled: _PooledSession) -> KeyHandle:
            try:
                key = pooled.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            except p11.NoSuchKey:
                if label in self._known_labels:
                    lost = _Lost(f"key {label!r} vanished", key_gone=label)
                    lost.generation = pooled.generation
                    raise lost from None
                raise KeyNotFound(label) from None
            except p11.MultipleObjectsReturned:
                raise DuplicateKeyLabel(label) from None
            return KeyHandle(
                label=label, key_id=bytes(key[Attribute.ID]), algorithm=_algorithm_of(label, key)
            )

        handle = self._run(describe)
        self._handles[label] = handle
        self._known_labels.add(label)
        return handle

    def has_key(self, label: str) -> bool:
        """Whether the token holds a private key with this label."""
        try:
            self.find_key(label)
        except KeyNotFound:
            return False
        return True

    def generate_key(self, label: str, algorithm: KeyAlgorithm) -> KeyHandle:
        """Generate a signing key pair in the token whose private half can never leave it.

        :raises DuplicateKeyLabel: when a key with this label exists.
        """
        if not label:
            raise ValueError("a key needs a label")
        key_id = secrets.token_bytes(16)

        def ids_labelled(session: Session) -> set[bytes]:
            return {
                bytes(obj[Attribute.ID])
                for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY)
                for obj in session.get_objects(
                    {Attribute.CLASS: object_class, Attribute.LABEL: label}
                )
            }

        def generate(pooled: _PooledSession) -> None:
            session = pooled.session
            existing = ids_labelled(session)
            if existing == {key_id}:
                return  # made by the attempt that lost its session just afterwards
            if existing:
                raise DuplicateKeyLabel(label)
            if algorithm.is_rsa:
                public, private = session.generate_keypair(
                    KeyType.RSA,
                    algorithm.rsa_bits,
                    id=key_id,
                    label=label,
                    store=True,
                    public_template={
                        **_PUBLIC_TEMPLATE,
                        Attribute.PUBLIC_EXPONENT: _RSA_PUBLIC_EXPONENT,
                    },
                    private_template=_PRIVATE_TEMPLATE,
                )
            else:
                parameters = session.create_domain_parameters(
                    KeyType.EC,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters(algorithm.curve_name)},
                    local=True,
                )
                public, private = parameters.generate_keypair(
                    id=key_id,
                    label=label,
                    store=True,
                    public_template=_PUBLIC_TEMPLATE,
                    private_template=_PRIVATE_TEMPLATE,
                )
            # Another process may have taken the label between the check and the generation.
            # Each side that sees a rival backs off, so a label never ends up on two keys.
            if ids_labelled(session) != {key_id}:
                private.destroy()
                public.destroy()
                raise DuplicateKeyLabel(label)

        # One generation at a time in this process, so that the label check and the creation
        # of two threads cannot interleave.
        with self._generate_lock:
            self._run(generate)
        handle = KeyHandle(label=label, key_id=key_id, algorithm=algorithm)
        self._handles[label] = handle
        self._known_labels.add(label)
        return handle

    def public_key(self, label: str) -> PublicKey:
        """The public half as a cryptography key, built from the token's public attributes.

        :raises KeyNotFound: when there is no key pair with this label.
        """
        cached = self._public_keys.get(label)
        if cached is not None:
            return cached
        handle = self.find_key(label)

        def read(pooled: _PooledSession) -> PublicKey:
            try:
                key = pooled.session.get_key(
                    object_class=ObjectClass.PUBLIC_KEY, label=label, id=handle.key_id
                )
            except p11.NoSuchKey:
                raise KeyNotFound(label) from None
            if handle.algorithm.is_rsa:
                return rsa.RSAPublicNumbers(
                    e=int.from_bytes(key[Attribute.PUBLIC_EXPONENT], "big"),
                    n=int.from_bytes(key[Attribute.MODULUS], "big"),
                ).public_key()
            if not isinstance(key, P11PublicKey):
                raise HSMError(f"the public half of {label!r} is not a public key object")
            loaded = serialization.load_der_public_key(encode_ec_public_key(key))
            if not (
                isinstance(loaded, ec.EllipticCurvePublicKey)
                and loaded.curve.name == handle.algorithm.curve_name
            ):
                raise HSMError(f"the public half of {label!r} does not match its private half")
            return loaded

        public = self._run(read)
        self._public_keys[label] = public
        return public

    def private_key(self, label: str) -> HSMPrivateKey:
        """A cryptography private-key object whose signatures are made in the token.

        :raises KeyNotFound: when there is no key pair with this label.
        """
        public = self.public_key(label)
        if isinstance(public, rsa.RSAPublicKey):
            return HSMRSAPrivateKey(self, label, public)
        return HSMECPrivateKey(self, label, public)

    # -- signing -----------------------------------------------------------------------------

    def sign(self, label: str, data: bytes, scheme: SignatureScheme) -> bytes:
        """Sign ``data`` with the key ``label``; ECDSA signatures come back DER-encoded.

        :raises ValueError: when the scheme does not fit the key's algorithm.
        """
        return self.sign_digest(label, hashlib.new(scheme.hash_name, data).digest(), scheme)

    def sign_digest(self, label: str, digest: bytes, scheme: SignatureScheme) -> bytes:
        """Sign a digest made on the host with the scheme's hash; ECDSA comes back DER-encoded.

        :raises ValueError: when the digest length or the scheme does not fit.
        """
        if len(digest) != scheme.digest_size:
            raise ValueError(
                f"a {scheme.value} digest has {scheme.digest_size} bytes, not {len(digest)}"
            )
        handle = self.find_key(label)
        if not scheme.fits(handle.algorithm):
            raise ValueError(
                f"{scheme.value} does not fit the {handle.algorithm.value} key {label!r}"
            )
        # The host hashes and the token runs the raw mechanism (CKM_ECDSA, CKM_RSA_PKCS over a
        # DigestInfo, CKM_RSA_PKCS_PSS), as HSM clients usually do: SoftHSM 2.6 has no
        # CKM_ECDSA_SHA256/384 at all, every PKCS#11 device implements these three, the token
        # receives 32-48 bytes instead of a whole TBSCertificate or CRL, and prehashed input
        # needs no second code path.
        mechanism: Mechanism
        parameter: tuple[Mechanism, MGF, int] | None = None
        if scheme.is_ecdsa:
            mechanism, payload = Mechanism.ECDSA, digest
        elif scheme.is_pss:
            mechanism, payload = Mechanism.RSA_PKCS_PSS, digest
            parameter = _PSS_PARAMS[scheme.hash_name]
        else:
            mechanism, payload = Mechanism.RSA_PKCS, _DIGEST_INFO[scheme.hash_name] + digest

        def sign(pooled: _PooledSession) -> bytes:
            key = self._private_key_object(pooled, handle)
            return key.sign(payload, mechanism=mechanism, mechanism_param=parameter)

        signature = self._run(sign)
        return _der_ecdsa(signature, handle.algorithm) if scheme.is_ecdsa else signature

    # -- certificates ------------------------------------------------------------------------

    def store_certificate(self, label: str, der: bytes, *, replace: bool = False) -> None:
        """Store an X.509 certificate as a public token object beside the key pair ``label``.

        The certificate gets the key's label and CKA_ID: PKCS#11 middleware (browsers, PDF
        signers, OpenSC) pairs a certificate with its private key by CKA_ID.

        :raises KeyNotFound: when the token holds no key pair with this label.
        :raises DuplicateCertificateLabel: when a certificate has this label and not ``replace``.
        :raises ValueError: when ``der`` is not a DER certificate, or certifies another key.
        """
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            raise ValueError("not a DER-encoded X.509 certificate") from None
        if certificate.public_key() != self.public_key(label):
            raise ValueError(f"the certificate is for another key than {label!r}")
        handle = self.find_key(label)
        # python-pkcs11 takes SUBJECT, ISSUER and SERIAL_NUMBER from the certificate's own
        # encoding (asn1crypto keeps it), as middleware compares them byte for byte. Not its
        # extended_set: that puts the key identifiers into CKA_HASH_OF_*_PUBLIC_KEY, which the
        # standard defines as hashes of the whole public key, so they would be wrong.
        template = {
            **decode_x509_certificate(der),
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.LABEL: label,
            Attribute.ID: handle.key_id,
        }
        tried = False  # whether an attempt may have stored it before its session was lost

        def store(pooled: _PooledSession) -> None:
            nonlocal tried
            session = pooled.session
            existing = _certificates_labelled(session, label)
            # A retry finds the certificate the lost attempt stored, if it got that far.
            ours = next((c for c in existing if tried and bytes(c[Attribute.VALUE]) == der), None)
            if ours is None:
                if existing and not replace:
                    raise DuplicateCertificateLabel(label)
                tried = True
                ours = session.create_object(template)
                if not replace and len(_certificates_labelled(session, label)) > 1:
                    # Another process stored one meanwhile; its certificate stays, ours goes.
                    ours.destroy()
                    raise DuplicateCertificateLabel(label)
            # Only now the old ones go, so that the key is never left without a certificate.
            for old in existing:
                if old.handle != ours.handle:
                    old.destroy()

        # One store at a time in this process, so that the check and the creation of two
        # threads cannot interleave.
        with self._certificate_lock:
            self._run(store)

    def certificate(self, label: str) -> bytes | None:
        """The DER X.509 certificate stored under ``label``, or None when there is none.

        :raises HSMError: when several certificates share the label.
        """

        def read(pooled: _PooledSession) -> bytes | None:
            found = _certificates_labelled(pooled.session, label)
            if len(found) > 1:
                raise HSMError(f"several certificates are labelled {label!r}: delete all but one")
            return bytes(found[0][Attribute.VALUE]) if found else None

        return self._run(read)
