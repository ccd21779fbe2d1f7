"""OpenSSH's ``ssh -D`` on loopback: the tunnel benchmark's yardstick.

A real ``sshd`` with its own host key, client key and configuration in a
temporary directory (listening on 127.0.0.1 only, key login only, the
``aes128-gcm@openssh.com`` cipher), and an ``ssh -N -D`` client whose SOCKS5
entry the benchmark pushes the same bytes through as through the tunnel.
The client pins the generated host key. Both run only if OpenSSH's server
and client are installed; as root, ``sshd`` needs its privilege separation
directory, which is created if missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
from pathlib import Path

from noisewall.ports import free_port

CIPHER = "aes128-gcm@openssh.com"
NAME = f"ssh -D ({CIPHER})"
_PRIVSEP_DIR = Path("/run/sshd")
_START_TIMEOUT = 15.0
_ATTEMPTS = 3


def available() -> bool:
    """True if ``sshd``, ``ssh`` and ``ssh-keygen`` are installed."""
    return all(shutil.which(tool, path=_search_path()) for tool in ("sshd", "ssh", "ssh-keygen"))


def _search_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def _tool(name: str) -> str:
    found = shutil.which(name, path=_search_path())
    if found is None:
        raise RuntimeError(f"{name} is not installed")
    return found


async def _keygen(path: Path) -> str:
    """A fresh ed25519 key pair at ``path``; returns the public key line."""
    keygen = await asyncio.create_subprocess_exec(
        _tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(path),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, error = await keygen.communicate()
    if keygen.returncode:
        raise RuntimeError(f"ssh-keygen failed: {error.decode(errors='replace').strip()}")
    return path.with_suffix(".pub").read_text(encoding="ascii").strip()


async def _listening(name: str, port: int, process: asyncio.subprocess.Process,
                     log: Path) -> None:
    """Wait (bounded) until ``port`` accepts connections; fail with the process's log."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _START_TIMEOUT
    while loop.time() < deadline and process.returncode is None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError(f"{name} did not start: {log.read_text(errors='replace')[-500:]!r}")


class SshTunnel:
    """A running ``sshd`` and ``ssh -D`` pair; ``socks_port`` is the client's SOCKS5 entry."""

    def __init__(self, server: asyncio.subprocess.Process,
                 client: asyncio.subprocess.Process, socks_port: int) -> None:
        self.server = server
        self.client = client
        self.socks_port = socks_port

    @classmethod
    async def start(cls, workdir: Path) -> SshTunnel:
        """Generate keys and configuration in ``workdir``, start both ends, wait for SOCKS5."""
        if os.geteuid() == 0:
            _PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        host_public = await _keygen(workdir / "ssh_host")
        (workdir / "authorized_keys").write_text(await _keygen(workdir / "ssh_client") + "\n",
                                                 encoding="ascii")
        # A port found free can be taken by someone else before sshd or ssh binds it.
        for _ in range(_ATTEMPTS - 1):
            with contextlib.suppress(RuntimeError):
                return await cls._start_on_free_ports(workdir, host_public)
        return await cls._start_on_free_ports(workdir, host_public)

    @classmethod
    async def _start_on_free_ports(cls, workdir: Path, host_public: str) -> SshTunnel:
        port = free_port()
        (workdir / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_public}\n",
                                             encoding="ascii")
        (workdir / "sshd_config").write_text("\n".join([
            f"ListenAddress 127.0.0.1:{port}",
            f"HostKey {workdir / 'ssh_host'}",
            f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
            "StrictModes no", "PermitRootLogin prohibit-password", "AllowTcpForwarding yes",
            f"Ciphers {CIPHER}", "Compression no", "PidFile none", "",
        ]), encoding="ascii")
        server_log = workdir / "sshd.log"
        with server_log.open("wb") as log:
            server = await asyncio.create_subprocess_exec(
                _tool("sshd"), "-D", "-e", "-f", str(workdir / "sshd_config"),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            await _listening("sshd", port, server, server_log)
            socks_port = free_port()
            client_log = workdir / "ssh.log"
            with client_log.open("wb") as log:
                client = await asyncio.create_subprocess_exec(
                    _tool("ssh"), "-F", "/dev/null", "-N", "-D", f"127.0.0.1:{socks_port}",
                    "-i", str(workdir / "ssh_client"), "-p", str(port),
                    "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                    "-o", f"UserKnownHostsFile={workdir / 'known_hosts'}",
                    "-o", "StrictHostKeyChecking=yes", "-o", f"Ciphers={CIPHER}",
                    "-o", "Compression=no", "-o", "ExitOnForwardFailure=yes",
                    f"{getpass.getuser()}@127.0.0.1",
                    stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
            tunnel = cls(server, client, socks_port)
        except BaseException:
            await _stop(server)
            raise
        try:
            await _listening("ssh -D", socks_port, client, client_log)
        except BaseException:
            await tunnel.stop()
            raise
        return tunnel

    async def stop(self) -> None:
        """Stop the client, then the server (and its per-connection processes)."""
        await _stop(self.client)
        await _stop(self.server)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
