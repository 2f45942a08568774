"""SoftHSM2 provisioning: a configuration file, a token directory, tokens by label.

This only prepares tokens; the service then uses them through ``Token`` like any other PKCS#11
token. SoftHSM reads the file named by ``SOFTHSM2_CONF`` when the module is initialised
(C_Initialize, i.e. the first PKCS#11 use in a process): a caller sets
``os.environ["SOFTHSM2_CONF"]`` to the path ``write_softhsm_config`` returns *before* the module
is first loaded in the process. Tokens created afterwards by ``init_softhsm_token`` (another
process) become visible to an already-initialised process only after ``hsm.rescan_tokens``.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import termios
import time
from collections.abc import Sequence
from pathlib import Path

from hsm.errors import HSMError

_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",  # Debian, Ubuntu
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",  # RHEL, Fedora
    "/usr/lib64/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",  # built from source
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",  # macOS (Apple silicon)
    "/usr/local/opt/softhsm/lib/softhsm/libsofthsm2.so",  # macOS (Intel)
)
_TOOL_TIMEOUT = 120.0


def find_softhsm_module() -> str | None:
    """The SoftHSM2 PKCS#11 module on this machine, or None when it is not installed."""
    return next((path for path in _MODULE_CANDIDATES if Path(path).is_file()), None)


def write_softhsm_config(directory: Path) -> Path:
    """Write ``directory/softhsm2.conf`` keeping tokens in ``directory/tokens`` (mode 0700).

    Set ``SOFTHSM2_CONF`` to the returned path before the module is first loaded in a process.
    """
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    # Token files hold the (PIN-wrapped) keys: nobody else needs to list or read them.
    directory.chmod(0o700)
    tokens.chmod(0o700)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n",
        encoding="utf-8",
    )
    return conf


def _tool() -> str:
    tool = shutil.which("softhsm2-util")
    if tool is None:
        raise HSMError(
            "softhsm2-util not found on PATH: install the softhsm2 package (`make run` does)"
        )
    return tool


def _environment(conf: Path) -> dict[str, str]:
    return {**os.environ, "SOFTHSM2_CONF": str(conf)}


def _softhsm_util(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run softhsm2-util for a command that takes no PIN."""
    return subprocess.run(  # noqa: S603  (fixed tool found on PATH, argument list, no shell)
        [_tool(), *args],
        capture_output=True,
        text=True,
        env=_environment(conf),
        check=False,
        timeout=_TOOL_TIMEOUT,
    )


def _start_on_terminal(conf: Path, args: Sequence[str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start softhsm2-util on a new pseudo-terminal; returns the process and the terminal."""
    master, slave = pty.openpty()
    try:
        # No echo: a PIN typed before softhsm2-util turns echo off itself must not come back.
        attributes = termios.tcgetattr(slave)
        attributes[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attributes)
        process = subprocess.Popen(  # noqa: S603  (fixed tool found on PATH, argument list, no shell)
            [_tool(), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=_environment(conf),
            start_new_session=True,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return process, master


def _answer_prompts(process: subprocess.Popen[bytes], terminal: int, pins: Sequence[str]) -> bytes:
    """Type each PIN at its "... PIN: " prompt, in order; returns everything the tool printed."""
    output = bytearray()
    answered = 0
    deadline = time.monotonic() + _TOOL_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([terminal], [], [], 0.5)
        if not ready:
            if process.poll() is not None:
                return bytes(output)
            continue
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: the tool exited and closed the terminal
            return bytes(output)
        if not chunk:
            return bytes(output)
        output += chunk
        prompts = output.count(b"PIN: ")
        if prompts > len(pins):
            # It asks again after refusing a PIN (too short, say): ours are used up.
            process.kill()
            return bytes(output)
        for pin in pins[answered:prompts]:
            os.write(terminal, pin.encode() + b"\n")
        answered = max(answered, prompts)
    process.kill()
    raise HSMError(f"softhsm2-util did not finish in {_TOOL_TIMEOUT:.0f} s")


def _softhsm_util_with_pins(conf: Path, args: Sequence[str], pins: Sequence[str]) -> None:
    """Run softhsm2-util, typing ``pins`` at its PIN prompts.

    PINs on the command line would be readable by every local user in /proc/PID/cmdline and
    are recorded by execve auditing, so they go through a pseudo-terminal instead, which is
    where softhsm2-util prompts for any PIN left off its command line.
    """
    process, terminal = _start_on_terminal(conf, args)
    try:
        output = _answer_prompts(process, terminal, pins)
        process.wait(timeout=_TOOL_TIMEOUT)
    finally:
        os.close(terminal)
    if process.returncode == 0:
        return
    text = output.decode(errors="replace")
    for pin in pins:
        text = text.replace(pin, "***")  # never let a PIN reach a log or an error message
    said = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and "PIN: " not in line and not line.startswith("===")
    ]
    reason = said[-1] if said else f"exit status {process.returncode}"
    raise HSMError(f"softhsm2-util {args[0]} failed: {reason}")


def _token_labels(conf: Path) -> list[str]:
    proc = _softhsm_util(conf, "--show-slots")
    if proc.returncode != 0:
        raise HSMError(f"softhsm2-util --show-slots failed: {proc.stderr.strip()}")
    return [
        line.split(":", 1)[1].strip()
        for line in proc.stdout.splitlines()
        if line.strip().startswith("Label:")
    ]


def softhsm_token_exists(conf_path: Path, label: str) -> bool:
    """Whether an initialised token with this label exists under ``conf_path``."""
    return label in _token_labels(conf_path)


def init_softhsm_token(conf_path: Path, label: str, so_pin: str, user_pin: str) -> None:
    """Create a token with this label and PINs, unless one with the label exists.

    :raises HSMError: when softhsm2-util is missing or fails (the message never holds a PIN).
    """
    if softhsm_token_exists(conf_path, label):
        return
    _softhsm_util_with_pins(
        conf_path,
        ["--init-token", "--free", "--label", label],
        [so_pin, so_pin, user_pin, user_pin],
    )


def delete_softhsm_token(conf_path: Path, label: str) -> None:
    """Delete the token with this label and every key in it; nothing happens if there is none.

    :raises HSMError: when softhsm2-util is missing or fails.
    """
    if not softhsm_token_exists(conf_path, label):
        return
    proc = _softhsm_util(conf_path, "--delete-token", "--token", label)
    if proc.returncode != 0:
        raise HSMError(f"could not delete SoftHSM token {label!r}: {proc.stderr.strip()}")
