"""Run `ca-service ARGS...` in a process that SIGKILLs itself inside issuance (test helper).

``python tests/faults/dying.py POINT ARGS...`` where POINT is where the process dies:
``before-sign`` (the serial and pending row are committed, the HSM has not signed) or
``after-sign`` (the HSM signed, nothing of it is stored). With ``FAULT_MARKER`` set, it dies
only while that file exists, and removes it first: the first worker of a server to get there
dies, the one gunicorn starts in its place serves normally.

This is fault injection, not a mock: the database, the SoftHSM token and the code paths are
the real ones; only the moment of death is chosen.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def main() -> None:
    point, args = sys.argv[1], sys.argv[2:]
    if point not in ("before-sign", "after-sign"):
        raise SystemExit(f"unknown point {point!r}")
    from ca_service.issuance import service

    real = service.sign_reservation
    marker = os.environ.get("FAULT_MARKER")

    def armed() -> bool:
        if marker is None:
            return True
        try:
            os.unlink(marker)  # of several workers or threads, exactly one gets to die
        except FileNotFoundError:
            return False
        return True

    def dying(*a: Any, **kw: Any) -> Any:
        if point == "before-sign" and armed():
            os.kill(os.getpid(), signal.SIGKILL)
        signed = real(*a, **kw)
        if point == "after-sign" and armed():
            os.kill(os.getpid(), signal.SIGKILL)
        return signed

    service.sign_reservation = dying  # read as a module global by the issuance functions
    from ca_service.cli import main as ca_service

    ca_service(args, prog_name="ca-service")


if __name__ == "__main__":
    main()
