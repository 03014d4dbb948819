"""The vault's cryptography, in one place.

* Master key (KEK, 32 bytes): Argon2id over a passphrase (salt and cost stored in the
  vault's meta row; at least m=19 MiB, t=2, p=1), or 32 random bytes in a key file
  (mode 0600 or stricter, owned by us; refused otherwise).
* Each secret version has its own data key (DEK, 32 random bytes). The value is sealed with
  AES-256-GCM under the DEK; the DEK is sealed under the KEK. Both use a fresh 96-bit nonce
  and additional data that binds the vault id, name, level and version, so a row copied to
  another name, level or version fails authentication.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from closedpaw.errors import ConfigError, SecretTampered, VaultKeyInvalid
from closedpaw.keyfile import PrivateFileRefused, create_private, read_private

__all__ = [
    "KEY_BYTES",
    "KdfParams",
    "aad_for",
    "derive_key",
    "new_key",
    "open_sealed",
    "read_key_file",
    "seal",
    "write_key_file",
]

KEY_BYTES = 32   # AES-256 (the same size as closedpaw.keyfile.KEY_BYTES, a different format)
NONCE_BYTES = 12
KEY_FILE_PREFIX = "closedpaw-vault-key-v1:"
#: OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane
MIN_MEMORY_KIB = 19 * 1024
MIN_ITERATIONS = 2


@dataclass(frozen=True)
class KdfParams:
    memory_kib: int = MIN_MEMORY_KIB
    iterations: int = MIN_ITERATIONS
    lanes: int = 1

    def check(self) -> None:
        if self.memory_kib < MIN_MEMORY_KIB or self.iterations < MIN_ITERATIONS \
                or self.lanes < 1:
            raise ConfigError(f"vault KDF: Argon2id needs at least m={MIN_MEMORY_KIB} KiB, "
                              f"t={MIN_ITERATIONS}, p=1 (got m={self.memory_kib}, "
                              f"t={self.iterations}, p={self.lanes})")


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def derive_key(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    params.check()
    if not passphrase:
        raise VaultKeyInvalid("the passphrase is empty")
    kdf = Argon2id(salt=salt, length=KEY_BYTES, iterations=params.iterations,
                   lanes=params.lanes, memory_cost=params.memory_kib)
    return kdf.derive(passphrase.encode("utf-8"))


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """nonce || AES-256-GCM(key, nonce, plaintext, aad)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes, what: str) -> bytes:
    if len(blob) < NONCE_BYTES + 16:
        raise SecretTampered(f"{what}: the stored ciphertext is truncated")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise SecretTampered(f"{what}: the stored ciphertext does not authenticate (it was "
                             "changed, or moved from another name, level or version)") from None


def aad_for(kind: str, vault_id: str, name: str, level: str, version: int) -> bytes:
    """Additional data: NUL-separated, so no two (name, level, version) tuples collide (a
    name never contains NUL)."""
    return "\0".join(("closedpaw-vault-v1", kind, vault_id, name, level, str(version))).encode()


def read_key_file(path: Path) -> bytes:
    """The 32-byte key in ``path``; refused unless it is a regular file of ours with no
    group or other permission bits."""
    try:
        data = read_private(path, 4096, owned=True)
    except PrivateFileRefused as e:
        raise VaultKeyInvalid(f"key file: {e}") from None
    text = data.decode("ascii", "replace").strip()
    if not text.startswith(KEY_FILE_PREFIX):
        raise VaultKeyInvalid(f"key file {path}: not a ClosedPaw vault key file")
    try:
        key = base64.urlsafe_b64decode(text[len(KEY_FILE_PREFIX):])
    except (ValueError, TypeError):
        key = b""
    if len(key) != KEY_BYTES:
        raise VaultKeyInvalid(f"key file {path}: malformed key")
    return key


def write_key_file(path: Path, key: bytes) -> None:
    """Create ``path`` (mode 0600, O_EXCL: never overwrites) holding ``key``, fsync'd."""
    text = KEY_FILE_PREFIX + base64.urlsafe_b64encode(key).decode() + "\n"
    if not create_private(path, text.encode()):
        raise FileExistsError(f"{path} already exists")
