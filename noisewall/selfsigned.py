"""Self-signed server certificates, built in memory.

Two parts present one: the messenger's media server (pinned by clients, kept
on disk across restarts) and the tunnel's ``tls`` transport (a fresh one per
server for its cover site). Both get the same leaf certificate: an ECDSA P-256
key, subject and issuer ``CN=<name>``, subject alternative names, not a CA,
key usage digital signature, extended key usage server authentication, valid
from a day ago (clock skew) for ``validity``. The lab network's certificate
authority (:func:`build_certificate_authority`) issues the same leaves.
:func:`dns_name` checks a server name before it goes into a certificate or a
ClientHello's SNI.
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
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    return _server_certificate(subject, key, subject, key, dns_names, ip_addresses, validity)


@dataclass(frozen=True, slots=True, repr=False)
class CertificateAuthority:
    """A certificate authority (certificate and key) that issues server certificates.

    ``repr`` leaves the key out so it is never logged.
    """

    cert_pem: bytes
    key_pem: bytes  # PKCS#8, unencrypted

    def issue(self, common_name: str, *, dns_names: Sequence[str] = (),
              ip_addresses: Sequence[IPAddress] = (),
              validity: datetime.timedelta) -> SelfSignedCertificate:
        """A fresh key and a server certificate for ``common_name`` signed by this authority.

        The result has the same form as :func:`build_self_signed`'s; only its
        issuer differs. At least one subject alternative name is required.
        """
        ca_certificate = x509.load_pem_x509_certificate(self.cert_pem)
        ca_key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError("the authority's key is not an EC key")
        return _server_certificate(_name(common_name), ec.generate_private_key(ec.SECP256R1()),
                                   ca_certificate.subject, ca_key, dns_names, ip_addresses,
                                   validity)

    def __repr__(self) -> str:
        fingerprint = x509.load_pem_x509_certificate(self.cert_pem).fingerprint(hashes.SHA256())
        return f"CertificateAuthority(sha256={fingerprint.hex()})"


def build_certificate_authority(common_name: str, *,
                                validity: datetime.timedelta) -> CertificateAuthority:
    """A fresh key and a self-signed CA certificate that may sign server certificates only.

    ``path_length=0``: it signs leaves, never another CA.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(certificate_authority=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
                                key_pem=_pkcs8(key))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _key_usage(*, certificate_authority: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=certificate_authority,
        crl_sign=certificate_authority,
        encipher_only=False,
        decipher_only=False,
    )


def _server_certificate(subject: x509.Name, key: ec.EllipticCurvePrivateKey,  # noqa: PLR0917
                        issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
                        dns_names: Sequence[str], ip_addresses: Sequence[IPAddress],
                        validity: datetime.timedelta) -> SelfSignedCertificate:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(a) for a in ip_addresses]
    if not names:
        raise ValueError("a server certificate needs at least one subject alternative name")
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(certificate_authority=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return SelfSignedCertificate(
        cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
        cert_der=certificate.public_bytes(serialization.Encoding.DER),
        key_pem=_pkcs8(key),
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
