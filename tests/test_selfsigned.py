"""The shared self-signed certificate builder: fields, fingerprint, and a real TLS handshake."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from noisewall.selfsigned import build_self_signed, load_cert_chain


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


async def test_a_client_that_trusts_the_certificate_completes_a_handshake() -> None:
    built = build_self_signed("localhost", dns_names=["localhost"],
                              validity=datetime.timedelta(days=1))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_cert_chain(server_context, built)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    client_context.load_verify_locations(cadata=built.cert_pem.decode("ascii"))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context, server_hostname="localhost"), 10)
        try:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            assert hashlib.sha256(der).digest() == built.fingerprint
            writer.write(b"hello")
            assert await asyncio.wait_for(reader.readexactly(5), 10) == b"hello"
        finally:
            writer.close()
            await writer.wait_closed()
