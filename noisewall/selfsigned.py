"""Self-signed server certificates, built in memory.

Two parts present one: the messenger's media server (pinned by clients, kept
on disk across restarts) and the tunnel's ``tls`` transport (a fresh one per
server for its cover site). Both get the same leaf certificate: an ECDSA P-256
key, subject and issuer ``CN=<name>``, subject alternative names, not a CA,
key usage digital signature, extended key usage server authentication, valid
from a day ago (clock skew) for ``validity``. :func:`dns_name` checks a
server name before it goes into a certificate or a ClientHello's SNI.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def dns_name(value: object) -> str:
    """``value`` as a server's DNS host name (lower case), or ValueError saying why it is not one.

    A name a certificate can carry as a subject alternative name and a TLS
    client can send as its SNI (RFC 6066: a host name, never an IP address
    literal): ASCII letters, digits and hyphens in dot-separated labels of
    1-63 characters, at most 253 in all, no trailing dot, and a last label
    that is not all digits (which would read as an IPv4 address).
    """
    if not isinstance(value, str):
        raise ValueError(f"a host name is text, not {type(value).__name__}")
    # ASCII first: str.lower() maps some non-ASCII letters (the Kelvin sign) onto ASCII ones.
    if not value.isascii():
        raise ValueError(f"{value!r} is not a host name: ASCII only (an IDN goes as its xn-- form)")
    name = value.lower()
    if not 0 < len(name) <= 253:
        raise ValueError(f"{value!r} is not a host name: it must have 1 to 253 characters")
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{value!r} is not a host name: labels are 1 to 63 letters, digits "
                         "or inner hyphens, separated by single dots")
    if labels[-1].isdigit():
        raise ValueError(f"{value!r} is an IP address, not a host name (TLS sends no SNI "
                         "for an address)")
    return name


@dataclass(frozen=True, slots=True, repr=False)
class SelfSignedCertificate:
    """A certificate with its private key; ``repr`` leaves the key out so it is never logged."""

    cert_pem: bytes
    cert_der: bytes
    key_pem: bytes  # PKCS#8, unencrypted

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the certificate's DER encoding (what clients pin)."""
        return hashlib.sha256(self.cert_der).digest()

    def __repr__(self) -> str:
        return f"SelfSignedCertificate(sha256={self.fingerprint.hex()})"


def build_self_signed(common_name: str, *, dns_names: Sequence[str] = (),
                      ip_addresses: Sequence[IPAddress] = (),
                      validity: datetime.timedelta) -> SelfSignedCertificate:
    """A fresh key and a self-signed server certificate for ``common_name``.

    ``dns_names`` and ``ip_addresses`` become the subject alternative names
    (clients match those, not the common name); at least one is required.
    """
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(a) for a in ip_addresses]
    if not names:
        raise ValueError("a server certificate needs at least one subject alternative name")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return SelfSignedCertificate(
        cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
        cert_der=certificate.public_bytes(serialization.Encoding.DER),
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
    )


def load_cert_chain(context: ssl.SSLContext, certificate: SelfSignedCertificate) -> None:
    """Load ``certificate`` and its key into ``context``.

    ``ssl`` loads chains from files only: they are written to a private
    temporary folder (mode 0700), loaded and deleted.
    """
    with tempfile.TemporaryDirectory() as folder:
        cert_path, key_path = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_path.write_bytes(certificate.cert_pem)
        key_path.write_bytes(certificate.key_pem)
        context.load_cert_chain(cert_path, key_path)
