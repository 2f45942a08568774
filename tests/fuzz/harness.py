"""atheris harnesses for the parsers of hostile input, on the hypothesis tests' entry points
(tests/issuance/test_hostile_parsers.py): the CSR check, and seal verification of a PDF and
of a detached CMS signature; and (tests/fuzz/parsers.py) OCSP requests as POST bodies and GET
paths, presented certificates (certificate login, tax binding) and document uploads. Each
input must be refused with the service's own error (a ValidationError, a CertificateRefused,
an OCSP malformedRequest) or get its answer — any other exception is a crash, an input slower
than libFuzzer's ``-timeout`` a hang.

    python -m tests.fuzz.harness csr                 # unbounded, by hand (Ctrl-C stops)
    python -m tests.fuzz.harness seal-pdf -runs=200  # bounded, as tests/fuzz/test_harnesses.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import atheris

from tests.fuzz.parsers import (
    CERTIFICATE_SEEDS,
    OCSP_SEEDS,
    UPLOAD_SEEDS,
    check_certificate,
    check_ocsp,
    check_upload,
)
from tests.issuance.test_hostile_parsers import (
    CSR_DER,
    CSR_PEM,
    DETACHED,
    PNG,
    SEALED_PDF,
    _refused_or_checked,
    _verdict,
)

MAX_LEN = 65_536


def _csr(data: bytes) -> None:
    _refused_or_checked(data)


def _seal_pdf(data: bytes) -> None:
    _verdict(data)


def _seal_cms(data: bytes) -> None:
    _verdict(PNG, data)


TARGETS: dict[str, tuple[Callable[[bytes], None], list[bytes]]] = {
    "csr": (_csr, [CSR_DER, CSR_PEM]),
    "seal-pdf": (_seal_pdf, [SEALED_PDF]),
    "seal-cms": (_seal_cms, [DETACHED]),
    "ocsp": (check_ocsp, OCSP_SEEDS),
    "certificate": (check_certificate, CERTIFICATE_SEEDS),
    "upload": (check_upload, UPLOAD_SEEDS),
}


def main() -> None:
    name, *options = sys.argv[1:]
    target, seeds = TARGETS[name]
    # Not instrumented (atheris.instrument_imports over the app's import tree takes a minute
    # before the first input): libFuzzer mutates blindly from the seeds, as hypothesis does.
    # The unharmed inputs first: libFuzzer mutates from the corpus it has seen.
    for seed in seeds:
        target(seed)

    def one_input(data: bytes) -> None:
        # Alternate raw bytes with damaged seeds, as the hypothesis tests' `mutated`.
        if data[:1] == b"\x00" or not data:
            target(data[1:])
            return
        seed = seeds[data[0] % len(seeds)]
        position = int.from_bytes(data[1:4].ljust(3, b"\x00"), "big") % max(len(seed), 1)
        target(seed[:position] + data[4:] + seed[position + len(data[4:]) :])

    atheris.Setup([sys.argv[0], f"-max_len={MAX_LEN}", "-timeout=10", *options], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
