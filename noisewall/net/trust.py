"""The lab's certificate authority, and the trust store that makes real TLS clients accept it.

``net up`` creates a CA per network (its key stays in the state folder,
mode 0600) and gives the inside and outside namespaces their own copy of
/etc/ssl (``/etc/netns/NS/ssl``, which ``ip netns exec`` mounts over /etc/ssl):
the host's bundle and hashed directory with the lab CA added. curl, OpenSSL,
GnuTLS and Python's ``ssl`` read those by default, so ``curl https://NAME/``
works inside with no option. The CA is trusted nowhere else: not on the host,
not in the border.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from noisewall.errors import NetError
from noisewall.net.topology import Network, Side
from noisewall.selfsigned import (
    CertificateAuthority,
    SelfSignedCertificate,
    build_certificate_authority,
    dns_name,
)

CA_KEY_FILE = "ca-key.pem"
CA_VALIDITY = datetime.timedelta(days=30)
SERVER_VALIDITY = datetime.timedelta(days=7)
SYSTEM_SSL = Path("/etc/ssl")
BUNDLE = Path("certs/ca-certificates.crt")
"""Debian's bundle, relative to /etc/ssl: curl's, OpenSSL's and Python's default CA file."""
TRUSTING_SIDES = (Side.INSIDE, Side.OUTSIDE)


def create_authority(network: Network) -> CertificateAuthority:
    """A fresh CA for ``network``, saved in its state folder, trusted inside and outside."""
    authority = build_certificate_authority(f"noisewall lab {network.name} CA",
                                            validity=CA_VALIDITY)
    network.ca_file.write_bytes(authority.cert_pem)
    key_path = network.state_dir / CA_KEY_FILE
    key_path.touch(mode=0o600)
    key_path.write_bytes(authority.key_pem)
    for side in TRUSTING_SIDES:
        _install_trust_store(network.etc_dir(side) / "ssl", network.name, authority.cert_pem)
    return authority


def load_authority(network: Network) -> CertificateAuthority:
    """``network``'s CA, or NetError if the network is not up."""
    try:
        return CertificateAuthority(cert_pem=network.ca_file.read_bytes(),
                                    key_pem=(network.state_dir / CA_KEY_FILE).read_bytes())
    except FileNotFoundError:
        raise NetError(f"network {network.name!r} is not up (noisewall net up --name "
                       f"{network.name})") from None


def issue_server_certificate(network: Network, names: Sequence[str]) -> SelfSignedCertificate:
    """A server certificate for lab ``names`` (host names or IP addresses) from the lab CA."""
    if not names:
        raise ValueError("a server certificate needs at least one name")
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    hosts: list[str] = []
    for name in names:
        try:
            addresses.append(ipaddress.ip_address(name))
        except ValueError:
            hosts.append(dns_name(name))
    return load_authority(network).issue(names[0], dns_names=hosts, ip_addresses=addresses,
                                         validity=SERVER_VALIDITY)


def write_certificate(certificate: SelfSignedCertificate, folder: Path) -> tuple[Path, Path]:
    """``cert.pem`` and ``key.pem`` (mode 0600) in ``folder``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.cert_pem)
    key_path.touch(mode=0o600)
    os.chmod(key_path, 0o600)
    key_path.write_bytes(certificate.key_pem)
    return cert_path, key_path


def _install_trust_store(target: Path, name: str, ca_pem: bytes) -> None:
    if SYSTEM_SSL.is_dir():
        shutil.copytree(SYSTEM_SSL, target, symlinks=True)
    (target / "certs").mkdir(parents=True, exist_ok=True)
    bundle = target / BUNDLE
    system_bundle = bundle.read_bytes() if bundle.exists() else b""
    bundle.unlink(missing_ok=True)  # may be a symlink into the host's files: never write through
    bundle.write_bytes(system_bundle + (b"" if system_bundle.endswith(b"\n") or not system_bundle
                                        else b"\n") + ca_pem)
    ca_name = f"noisewall-lab-{name}.pem"
    (target / "certs" / ca_name).write_bytes(ca_pem)
    subject_hash = _openssl_subject_hash(ca_pem)
    if subject_hash is not None:
        # OpenSSL tries HASH.0, HASH.1, ... in turn: another CA may already hold HASH.0.
        link = next(target / "certs" / f"{subject_hash}.{n}" for n in itertools.count()
                    if not (target / "certs" / f"{subject_hash}.{n}").is_symlink())
        link.symlink_to(ca_name)


def _openssl_subject_hash(ca_pem: bytes) -> str | None:
    """OpenSSL's hash of the CA's subject (the hashed-directory file name), if openssl exists."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    result = subprocess.run([openssl, "x509", "-noout", "-subject_hash"],  # noqa: S603
                            input=ca_pem, capture_output=True, check=False)
    return result.stdout.decode().strip() if result.returncode == 0 else None
