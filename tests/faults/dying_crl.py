"""Run `ca-service ARGS...` in a process that SIGKILLs itself inside CRL publication (test
helper): right after the HSM signed a CRL, before anything of it is stored.

``python tests/faults/dying_crl.py ARGS...``: the first CRL the process signs is its last act.
With ``SIGNED_CRL_FILE`` set, the signed CRL's DER is written there first, for the test to see
what was signed and lost.
This is fault injection, not a mock: the database, the SoftHSM token and the code paths are
the real ones; only the moment of death is chosen.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


def main() -> None:
    real = x509.CertificateRevocationListBuilder.sign

    def dying(*a: Any, **kw: Any) -> Any:
        crl = real(*a, **kw)  # the HSM signs the CRL ...
        if path := os.environ.get("SIGNED_CRL_FILE"):
            with open(path, "wb") as sink:
                sink.write(crl.public_bytes(Encoding.DER))
                sink.flush()
                os.fsync(sink.fileno())
        os.kill(os.getpid(), signal.SIGKILL)  # ... and the process dies before storing it
        raise AssertionError("unreachable: SIGKILL was sent")

    # Read as an attribute of the builder class by revocation.service.publish_crl.
    x509.CertificateRevocationListBuilder.sign = dying  # type: ignore[method-assign]
    from ca_service.cli import main as ca_service

    ca_service(sys.argv[1:], prog_name="ca-service")


if __name__ == "__main__":
    main()
