"""Media encryption as WhatsApp does it (sans-IO, streaming).

A random 32-byte *media key* is expanded by HKDF-SHA256 (no salt, a per-kind
info string, 112 bytes out) into::

    iv         = okm[0:16]
    cipher key = okm[16:48]   AES-256-CBC, PKCS#7 padding
    mac key    = okm[48:80]   HMAC-SHA256 over iv + ciphertext, truncated to 10 bytes

The uploaded *blob* is ``ciphertext + mac``. The end-to-end message carries a
:class:`MediaDescriptor`: the media key, SHA-256 of the plaintext and of the
blob, the plaintext size, the MIME type and the blob id the media server gave.

:class:`MediaEncryptor` and :class:`MediaDecryptor` take chunks of any size and
return output as it becomes available, so neither side holds a file whole in
memory. The decryptor's output is *unauthenticated* until :meth:`finalize`
verifies the MAC and both hashes, which is why receivers use
:func:`decrypt_file`: it writes to a temporary file beside the destination and
moves it into place only after every check passed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MEDIA_KEY_SIZE = 32
MAC_SIZE = 10
BLOCK_SIZE = 16
HASH_SIZE = 32
EXPANDED_SIZE = 112
CHUNK_SIZE = 64 * 1024
MIN_BLOB_SIZE = BLOCK_SIZE + MAC_SIZE
"""The smallest valid blob: one padded block (even an empty file has one) and the MAC."""

BLOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")
"""A media server blob id: ``secrets.token_urlsafe(32)``, 43 URL-safe base64 characters."""

MAX_MIME_LENGTH = 255


class MediaError(Exception):
    """Base class of the errors of the media encryption layer."""


class MediaIntegrityError(MediaError):
    """A blob failed a check: MAC, a hash, its size or its padding. Nothing was written."""


class MediaDescriptorError(MediaError, ValueError):
    """A media descriptor (from an end-to-end message) is malformed."""


class MediaKind(enum.Enum):
    """The kind of a media file; each has WhatsApp's HKDF info string."""

    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    DOCUMENT = "document"

    @property
    def info(self) -> bytes:
        """The HKDF info string WhatsApp uses for this kind."""
        return _INFO[self]


_INFO: dict[MediaKind, bytes] = {
    MediaKind.IMAGE: b"WhatsApp Image Keys",
    MediaKind.VIDEO: b"WhatsApp Video Keys",
    MediaKind.AUDIO: b"WhatsApp Audio Keys",
    MediaKind.DOCUMENT: b"WhatsApp Document Keys",
}


@dataclass(frozen=True, slots=True)
class MediaKeys:
    """The keys one media key expands into."""

    iv: bytes
    cipher_key: bytes
    mac_key: bytes


def new_media_key() -> bytes:
    """A fresh random media key."""
    return secrets.token_bytes(MEDIA_KEY_SIZE)


def expand_media_key(media_key: bytes, kind: MediaKind) -> MediaKeys:
    """HKDF-SHA256(media_key, info=kind.info) into IV, AES key and MAC key."""
    if not isinstance(media_key, bytes) or len(media_key) != MEDIA_KEY_SIZE:
        raise ValueError(f"a media key is {MEDIA_KEY_SIZE} bytes")
    okm = HKDF(algorithm=hashes.SHA256(), length=EXPANDED_SIZE, salt=None, info=kind.info).derive(
        media_key
    )
    return MediaKeys(iv=okm[0:16], cipher_key=okm[16:48], mac_key=okm[48:80])


@dataclass(frozen=True, slots=True)
class EncryptedMedia:
    """What encrypting a file produced, to be completed by a blob id into a descriptor."""

    media_key: bytes
    kind: MediaKind
    sha256_plain: bytes
    sha256_blob: bytes
    size: int
    blob_size: int

    def descriptor(self, blob_id: str, mime: str) -> MediaDescriptor:
        """The descriptor for the end-to-end message, once the blob is uploaded."""
        return MediaDescriptor(
            media_key=self.media_key,
            sha256_plain=self.sha256_plain,
            sha256_blob=self.sha256_blob,
            size=self.size,
            mime=mime,
            blob_id=blob_id,
            kind=self.kind,
        )


class MediaEncryptor:
    """Streaming encryption: plaintext chunks in, blob chunks out.

    The concatenation of every :meth:`update` result and the :meth:`finalize`
    result is the blob (ciphertext + 10-byte MAC), whatever the chunking.
    """

    def __init__(self, media_key: bytes, kind: MediaKind) -> None:
        keys = expand_media_key(media_key, kind)
        self._media_key = media_key
        self._kind = kind
        self._padder = padding.PKCS7(algorithms.AES.block_size).padder()
        self._cipher = Cipher(algorithms.AES(keys.cipher_key), modes.CBC(keys.iv)).encryptor()
        self._mac = crypto_hmac.HMAC(keys.mac_key, hashes.SHA256())
        self._mac.update(keys.iv)
        self._sha_plain = hashlib.sha256()
        self._sha_blob = hashlib.sha256()
        self._size = 0
        self._blob_size = 0
        self._result: EncryptedMedia | None = None

    def update(self, chunk: bytes) -> bytes:
        """Encrypt one chunk of plaintext; returns the ciphertext available so far."""
        if self._result is not None:
            raise RuntimeError("the encryptor is finalized")
        self._sha_plain.update(chunk)
        self._size += len(chunk)
        out = self._cipher.update(self._padder.update(chunk))
        self._emit(out)
        return out

    def finalize(self) -> bytes:
        """The last ciphertext and the MAC; afterwards :attr:`result` is available."""
        if self._result is not None:
            raise RuntimeError("the encryptor is finalized")
        out = self._cipher.update(self._padder.finalize()) + self._cipher.finalize()
        self._mac.update(out)
        mac = self._mac.finalize()[:MAC_SIZE]
        tail = out + mac
        self._sha_blob.update(tail)
        self._blob_size += len(tail)
        self._result = EncryptedMedia(
            media_key=self._media_key,
            kind=self._kind,
            sha256_plain=self._sha_plain.digest(),
            sha256_blob=self._sha_blob.digest(),
            size=self._size,
            blob_size=self._blob_size,
        )
        return tail

    @property
    def result(self) -> EncryptedMedia:
        """The key, hashes and sizes; only after :meth:`finalize`."""
        if self._result is None:
            raise RuntimeError("the encryptor is not finalized yet")
        return self._result

    def _emit(self, ciphertext: bytes) -> None:
        self._mac.update(ciphertext)
        self._sha_blob.update(ciphertext)
        self._blob_size += len(ciphertext)


class MediaDecryptor:
    """Streaming decryption: blob chunks in, *unauthenticated* plaintext chunks out.

    The last 10 bytes of the blob are the MAC, so the decryptor holds them back
    until :meth:`finalize`, which checks the MAC, the blob hash, the padding,
    the plaintext hash and (if given) the size, raising
    :class:`MediaIntegrityError` on any failure. Plaintext returned before
    :meth:`finalize` succeeds must not be shown or kept: see :func:`decrypt_file`.
    """

    def __init__(
        self,
        media_key: bytes,
        kind: MediaKind,
        expected_sha256_plain: bytes,
        expected_sha256_blob: bytes,
        *,
        expected_size: int | None = None,
    ) -> None:
        keys = expand_media_key(media_key, kind)
        if len(expected_sha256_plain) != HASH_SIZE or len(expected_sha256_blob) != HASH_SIZE:
            raise ValueError(f"expected hashes are {HASH_SIZE} bytes")
        self._expected_plain = expected_sha256_plain
        self._expected_blob = expected_sha256_blob
        self._expected_size = expected_size
        self._cipher = Cipher(algorithms.AES(keys.cipher_key), modes.CBC(keys.iv)).decryptor()
        self._unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
        self._mac = crypto_hmac.HMAC(keys.mac_key, hashes.SHA256())
        self._mac.update(keys.iv)
        self._sha_plain = hashlib.sha256()
        self._sha_blob = hashlib.sha256()
        self._held = b""
        self._ciphertext_size = 0
        self._size = 0
        self._done = False

    def update(self, chunk: bytes) -> bytes:
        """Feed blob bytes; returns plaintext that is not yet authenticated."""
        if self._done:
            raise RuntimeError("the decryptor is finalized")
        self._sha_blob.update(chunk)
        data = self._held + chunk
        if len(data) <= MAC_SIZE:
            self._held = data
            return b""
        ciphertext, self._held = data[:-MAC_SIZE], data[-MAC_SIZE:]
        self._mac.update(ciphertext)
        self._ciphertext_size += len(ciphertext)
        if self._expected_size is not None and self._ciphertext_size > _padded_size(
            self._expected_size
        ):
            raise MediaIntegrityError("the blob is longer than its descriptor says")
        return self._plain(self._unpadder.update(self._cipher.update(ciphertext)))

    def finalize(self) -> bytes:
        """Verify everything; returns the last plaintext or raises MediaIntegrityError."""
        if self._done:
            raise RuntimeError("the decryptor is finalized")
        self._done = True
        if len(self._held) < MAC_SIZE or self._ciphertext_size < BLOCK_SIZE:
            raise MediaIntegrityError("the blob is too short")
        if self._ciphertext_size % BLOCK_SIZE:
            raise MediaIntegrityError("the ciphertext is not a whole number of blocks")
        mac = self._mac.finalize()[:MAC_SIZE]
        if not hmac.compare_digest(mac, self._held):
            raise MediaIntegrityError("the media MAC does not match")
        if not hmac.compare_digest(self._sha_blob.digest(), self._expected_blob):
            raise MediaIntegrityError("the SHA-256 of the blob does not match")
        try:
            tail = self._unpadder.update(self._cipher.finalize()) + self._unpadder.finalize()
        except ValueError:
            raise MediaIntegrityError("the media padding is invalid") from None
        tail = self._plain(tail)
        if not hmac.compare_digest(self._sha_plain.digest(), self._expected_plain):
            raise MediaIntegrityError("the SHA-256 of the plaintext does not match")
        if self._expected_size is not None and self._size != self._expected_size:
            raise MediaIntegrityError("the plaintext size does not match the descriptor")
        return tail

    def _plain(self, plaintext: bytes) -> bytes:
        self._sha_plain.update(plaintext)
        self._size += len(plaintext)
        return plaintext


def _padded_size(size: int) -> int:
    return (size // BLOCK_SIZE + 1) * BLOCK_SIZE


def blob_size(size: int) -> int:
    """The size of the blob for a plaintext of ``size`` bytes (padding and MAC)."""
    return _padded_size(size) + MAC_SIZE


def encrypt(
    plaintext: bytes, kind: MediaKind, media_key: bytes | None = None
) -> tuple[bytes, EncryptedMedia]:
    """One-shot encryption of a small file: the blob and its key and hashes."""
    encryptor = MediaEncryptor(new_media_key() if media_key is None else media_key, kind)
    blob = encryptor.update(plaintext) + encryptor.finalize()
    return blob, encryptor.result


def decrypt(
    blob: bytes,
    media_key: bytes,
    expected_sha256_plain: bytes,
    expected_sha256_blob: bytes,
    kind: MediaKind,
) -> bytes:
    """One-shot verified decryption of a small blob."""
    decryptor = MediaDecryptor(media_key, kind, expected_sha256_plain, expected_sha256_blob)
    out = decryptor.update(blob)
    return out + decryptor.finalize()


def encrypt_chunks(chunks: Iterable[bytes], encryptor: MediaEncryptor) -> Iterator[bytes]:
    """Yield the blob for ``chunks``; ``encryptor.result`` is ready when exhausted."""
    for chunk in chunks:
        out = encryptor.update(chunk)
        if out:
            yield out
    yield encryptor.finalize()


def read_chunks(path: Path, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The bytes of ``path`` in chunks of at most ``chunk_size``."""
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk


def encrypt_file(
    src_path: Path, blob_path: Path, kind: MediaKind, media_key: bytes | None = None
) -> EncryptedMedia:
    """Encrypt ``src_path`` into ``blob_path`` (written atomically), streaming."""
    encryptor = MediaEncryptor(new_media_key() if media_key is None else media_key, kind)
    with atomic_writer(blob_path) as out:
        for piece in encrypt_chunks(read_chunks(src_path), encryptor):
            out.write(piece)
    return encryptor.result


def decrypt_file(  # noqa: PLR0917 - the signature the client code calls positionally
    blob_path: Path,
    dest_path: Path,
    media_key: bytes,
    expected_sha256_plain: bytes,
    expected_sha256_blob: bytes,
    kind: MediaKind,
    *,
    expected_size: int | None = None,
) -> None:
    """Decrypt ``blob_path`` into ``dest_path`` only if MAC and both hashes verify.

    Streams through a temporary file beside ``dest_path`` that is fsynced and
    renamed over ``dest_path`` after every check passed; on failure it is
    removed and :class:`MediaIntegrityError` raised, leaving no ``dest_path``
    (an existing one is left untouched).
    """
    decryptor = MediaDecryptor(
        media_key,
        kind,
        expected_sha256_plain,
        expected_sha256_blob,
        expected_size=expected_size,
    )
    with atomic_writer(dest_path) as out:
        for chunk in read_chunks(blob_path):
            out.write(decryptor.update(chunk))
        out.write(decryptor.finalize())


@contextlib.contextmanager
def atomic_writer(dest_path: Path) -> Iterator[BinaryIO]:
    """Write a file beside ``dest_path`` and rename it over ``dest_path`` on success.

    The data is fsynced before the rename. If the body raises, the temporary
    file is deleted and ``dest_path`` is neither created nor changed.
    """
    dest_path = Path(dest_path)
    fd, tmp_name = tempfile.mkstemp(
        dir=dest_path.parent, prefix=f".{dest_path.name}.", suffix=".part"
    )
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest_path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class MediaDescriptor:
    """What an end-to-end media message carries so the receiver can fetch and verify."""

    media_key: bytes
    sha256_plain: bytes
    sha256_blob: bytes
    size: int
    mime: str
    blob_id: str
    kind: MediaKind

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; bytes as standard base64."""
        return {
            "media_key": _b64(self.media_key),
            "sha256_plain": _b64(self.sha256_plain),
            "sha256_blob": _b64(self.sha256_blob),
            "size": self.size,
            "mime": self.mime,
            "blob_id": self.blob_id,
            "kind": self.kind.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MediaDescriptor:
        """Parse and validate; raises :class:`MediaDescriptorError` on any defect."""
        if not isinstance(data, Mapping):
            raise MediaDescriptorError("a media descriptor is an object")
        size = data.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise MediaDescriptorError("media descriptor field 'size' must be an integer >= 0")
        mime = _field(data, "mime", str)
        if not mime or len(mime) > MAX_MIME_LENGTH or not mime.isprintable():
            raise MediaDescriptorError("media descriptor field 'mime' is not a MIME type")
        blob_id = _field(data, "blob_id", str)
        if not BLOB_ID_PATTERN.fullmatch(blob_id):
            raise MediaDescriptorError("media descriptor field 'blob_id' is not a blob id")
        try:
            kind = MediaKind(_field(data, "kind", str))
        except ValueError:
            raise MediaDescriptorError(
                "media descriptor field 'kind' must be one of "
                + ", ".join(k.value for k in MediaKind)
            ) from None
        return cls(
            media_key=_b64_field(data, "media_key", MEDIA_KEY_SIZE),
            sha256_plain=_b64_field(data, "sha256_plain", HASH_SIZE),
            sha256_blob=_b64_field(data, "sha256_blob", HASH_SIZE),
            size=size,
            mime=mime,
            blob_id=blob_id,
            kind=kind,
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _field(data: Mapping[str, Any], name: str, typ: type[str]) -> str:
    value = data.get(name)
    if not isinstance(value, typ):
        raise MediaDescriptorError(f"media descriptor field {name!r} must be a string")
    return value


def _b64_field(data: Mapping[str, Any], name: str, length: int) -> bytes:
    text = _field(data, name, str)
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise MediaDescriptorError(f"media descriptor field {name!r} is not base64") from None
    if len(raw) != length:
        raise MediaDescriptorError(f"media descriptor field {name!r} must be {length} bytes")
    return raw
