"""The shared self-signed certificate builder: fields, fingerprint, and a real TLS handshake."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from noisewall.selfsigned import (
    SelfSignedCertificate,
    build_certificate_authority,
    build_self_signed,
    dns_name,
    load_cert_chain,
)


def test_a_leaf_server_certificate_with_the_names_asked_for() -> None:
    built = build_self_signed("cover.example", dns_names=["cover.example", "localhost"],
                              ip_addresses=[ipaddress.IPv4Address("127.0.0.1")],
                              validity=datetime.timedelta(days=90))
    cert = x509.load_pem_x509_certificate(built.cert_pem)
    assert cert == x509.load_der_x509_certificate(built.cert_der)
    assert cert.subject.rfc4514_string() == cert.issuer.rfc4514_string() == "CN=cover.example"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["cover.example", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.IPv4Address("127.0.0.1")]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=91)  # valid from a day ago, for clock skew
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert built.fingerprint == hashlib.sha256(built.cert_der).digest()
    assert built.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert repr(built) == f"SelfSignedCertificate(sha256={built.fingerprint.hex()})"
    assert "PRIVATE" not in repr(built) and "PRIVATE" not in str(built)


def test_each_call_makes_a_new_key() -> None:
    first, second = (build_self_signed("a", dns_names=["a"], validity=datetime.timedelta(days=1))
                     for _ in range(2))
    assert first.key_pem != second.key_pem and first.fingerprint != second.fingerprint


def test_no_subject_alternative_name_is_refused() -> None:
    with pytest.raises(ValueError, match="subject alternative name"):
        build_self_signed("nobody", validity=datetime.timedelta(days=1))


async def _echo_over_tls(served: SelfSignedCertificate, trusted_pem: bytes,
                        server_hostname: str) -> bytes:
    """The DER certificate a verifying client that trusts ``trusted_pem`` was shown."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_cert_chain(server_context, served)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    client_context.load_verify_locations(cadata=trusted_pem.decode("ascii"))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            writer.write(await reader.readexactly(5))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context, server_hostname=server_hostname), 10)
        try:
            der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.write(b"hello")
            assert await asyncio.wait_for(reader.readexactly(5), 10) == b"hello"
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
    return der


async def test_a_client_that_trusts_the_certificate_completes_a_handshake() -> None:
    built = build_self_signed("localhost", dns_names=["localhost"],
                              validity=datetime.timedelta(days=1))
    der = await _echo_over_tls(built, built.cert_pem, "localhost")
    assert hashlib.sha256(der).digest() == built.fingerprint


def test_a_certificate_authority_signs_leaves_only() -> None:
    authority = build_certificate_authority("lab CA", validity=datetime.timedelta(days=1))
    ca = x509.load_pem_x509_certificate(authority.cert_pem)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    leaf = x509.load_pem_x509_certificate(
        authority.issue("chat.lab", dns_names=["chat.lab"],
                        ip_addresses=[ipaddress.ip_address("203.0.113.10")],
                        validity=datetime.timedelta(days=1)).cert_pem)
    leaf.verify_directly_issued_by(ca)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["chat.lab"]
    assert "PRIVATE" not in repr(authority) and repr(authority).startswith(
        "CertificateAuthority(sha256=")


async def test_a_client_that_trusts_the_authority_accepts_what_it_issued() -> None:
    authority = build_certificate_authority("lab CA", validity=datetime.timedelta(days=1))
    issued = authority.issue("localhost", dns_names=["localhost"],
                             validity=datetime.timedelta(days=1))
    der = await _echo_over_tls(issued, authority.cert_pem, "localhost")
    assert hashlib.sha256(der).digest() == issued.fingerprint


async def test_a_client_that_trusts_another_authority_refuses_it() -> None:
    authority, other = (build_certificate_authority(name, validity=datetime.timedelta(days=1))
                        for name in ("lab CA", "other CA"))
    issued = authority.issue("localhost", dns_names=["localhost"],
                             validity=datetime.timedelta(days=1))
    with pytest.raises(ssl.SSLCertVerificationError):
        await _echo_over_tls(issued, other.cert_pem, "localhost")


@pytest.mark.parametrize(("value", "expected"), [
    ("mmg.whatsapp.net", "mmg.whatsapp.net"),
    ("MMG.WhatsApp.NET", "mmg.whatsapp.net"),  # SNI and SANs compare case-insensitively
    ("localhost", "localhost"),
    ("xn--fiqs8s.example", "xn--fiqs8s.example"),
    ("a-b.c1", "a-b.c1"),
    ("a" * 63 + ".example", "a" * 63 + ".example"),
])
def test_dns_name_accepts_host_names(value: str, expected: str) -> None:
    assert dns_name(value) == expected


@pytest.mark.parametrize(("value", "says"), [
    ("127.0.10.2", "IP address"),
    ("::1", "labels"),
    ("", "1 to 253"),
    ("a." * 127 + "ab", "1 to 253"),
    ("a" * 64 + ".example", "labels"),
    ("mmg..example", "labels"),
    ("mmg.example.", "labels"),
    ("-mmg.example", "labels"),
    ("mmg-.example", "labels"),
    ("mmg_1.example", "labels"),
    ("mmg.example\n", "labels"),
    ("\u212aelvin.example", "ASCII"),  # KELVIN SIGN lower-cases to an ASCII 'k'
    (42, "text"),
    (None, "text"),
])
def test_dns_name_refuses_anything_else(value: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        dns_name(value)


async def test_the_name_as_sni_reaches_a_server_whose_certificate_names_it() -> None:
    built = build_self_signed("noisewall-media", dns_names=["localhost", dns_name("mmg.example")],
                              validity=datetime.timedelta(days=1))
    seen: list[str | None] = []
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_cert_chain(server_context, built)
    server_context.sni_callback = lambda _obj, name, _ctx: seen.append(name)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    client_context.load_verify_locations(cadata=built.cert_pem.decode("ascii"))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    async with server:
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context, server_hostname="mmg.example"), 10)
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    assert seen == ["mmg.example"]
