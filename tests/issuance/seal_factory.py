"""Make a test seal CA, seal certificates and sealed documents, generated per test session."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import struct
import zlib
from dataclasses import dataclass

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.writer import PdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes
from pyhanko_certvalidator.registry import SimpleCertificateStore
from stdnum.cn import uscc

PDF_TEXT = b"Application for an organisation certificate"


def make_uscc(first_17: str) -> str:
    """A valid unified social credit code: the 17 given characters plus their check digit."""
    number = first_17 + uscc.calc_check_digit(first_17)
    assert uscc.is_valid(number)
    return number


@dataclass(frozen=True)
class Authority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class SealIdentity:
    """A seal certificate, its key and the CA that issued it."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    issuer: Authority

    def signer(self) -> signers.SimpleSigner:
        return signers.SimpleSigner(
            signing_cert=_asn1_cert(self.certificate),
            signing_key=asn1_keys.PrivateKeyInfo.load(
                self.key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
            ),
            cert_registry=SimpleCertificateStore.from_certs([_asn1_cert(self.issuer.certificate)]),
        )


def make_seal_ca(common_name: str, *, now: dt.datetime) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Seal Authority"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=3650))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def make_seal(
    issuer: Authority,
    *,
    organisation: str,
    registration_number: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
    identifier: x509.NameAttribute | None = None,
) -> SealIdentity:
    """A seal certificate naming the organisation by ``identifier``; by default an ETSI-style
    organizationIdentifier "NTRCN-<registration number>"."""
    key = ec.generate_private_key(ec.SECP256R1())
    if identifier is None:
        identifier = x509.NameAttribute(
            NameOID.ORGANIZATION_IDENTIFIER, f"NTRCN-{registration_number}"
        )
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            identifier,
            x509.NameAttribute(NameOID.COMMON_NAME, f"{organisation} seal"),
        ]
    )
    ca_key_id = x509.SubjectKeyIdentifier.from_public_key(issuer.key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
    )
    return SealIdentity(certificate, key, issuer)


def minimal_pdf(text: bytes = PDF_TEXT) -> bytes:
    """A one-page PDF whose (uncompressed) content stream shows ``text``."""
    writer = PdfFileWriter(stream_xrefs=False)
    font = writer.add_object(
        generic.DictionaryObject(
            {
                generic.pdf_name("/Type"): generic.pdf_name("/Font"),
                generic.pdf_name("/Subtype"): generic.pdf_name("/Type1"),
                generic.pdf_name("/BaseFont"): generic.pdf_name("/Helvetica"),
            }
        )
    )
    contents = writer.add_object(
        generic.StreamObject(stream_data=b"BT /F1 12 Tf 72 720 Td (" + text + b") Tj ET")
    )
    page = generic.DictionaryObject(
        {
            generic.pdf_name("/Type"): generic.pdf_name("/Page"),
            generic.pdf_name("/MediaBox"): generic.ArrayObject(
                [generic.NumberObject(n) for n in (0, 0, 595, 842)]
            ),
            generic.pdf_name("/Contents"): contents,
            generic.pdf_name("/Resources"): generic.DictionaryObject(
                {
                    generic.pdf_name("/Font"): generic.DictionaryObject(
                        {generic.pdf_name("/F1"): font}
                    )
                }
            ),
        }
    )
    writer.insert_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def seal_pdf(pdf: bytes, seal: SealIdentity, *, field_name: str = "Seal") -> bytes:
    """Add a PAdES signature by ``seal`` (signing time: now, in /M) as an incremental update."""
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    meta = signers.PdfSignatureMetadata(
        field_name=field_name, subfilter=fields.SigSeedSubFilter.PADES
    )
    out: io.BytesIO = signers.sign_pdf(writer, meta, signer=seal.signer())
    return out.getvalue()


def append_revision(pdf: bytes, text: bytes = b"Forged page text") -> bytes:
    """``pdf`` with an unsigned incremental update that replaces the first page's content."""
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    page_ref = writer.root["/Pages"]["/Kids"][0]
    page = page_ref.get_object()
    page[generic.pdf_name("/Contents")] = writer.add_object(
        generic.StreamObject(stream_data=b"BT /F1 12 Tf 72 720 Td (" + text + b") Tj ET")
    )
    writer.update_container(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def sign_detached(content: bytes, seal: SealIdentity, *, signing_time: dt.datetime) -> bytes:
    """A detached CMS SignedData (DER, as in a .p7s file) over ``content``."""
    signed = asyncio.run(
        seal.signer().async_sign_general_data(
            content,
            "sha256",
            detached=True,
            signed_attr_settings=PdfCMSSignedAttributes(signing_time=signing_time),
        )
    )
    der: bytes = signed.dump()
    return der


def flip_byte(data: bytes, inside: bytes) -> bytes:
    """``data`` with one byte changed in the first occurrence of ``inside``."""
    at = data.index(inside) + len(inside) // 2
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def minimal_png() -> bytes:
    """A valid 1x1 greyscale PNG."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


def minimal_jpeg() -> bytes:
    """SOI, a JFIF APP0 segment and EOI: enough structure for sniffing (never decoded)."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0 + b"\xff\xd9"


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=not ca,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _asn1_cert(certificate: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(certificate.public_bytes(Encoding.DER))
