"""The vault's tables, in the gate's database (their own metadata: the vault creates them).

``vault_meta`` has one row: how the master key is obtained (``kdf``: ``argon2id`` with its
salt and cost, or ``keyfile`` with its path), a check value sealed under the master key (so a
wrong passphrase is told apart from a tampered secret) and the rotation generation.
``vault_secrets`` has one row per secret version; ``vault_reads`` records each one-time
delivery of an approved read.
"""

from __future__ import annotations

from sqlalchemy import Float, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["MetaRow", "ReadRow", "SecretRow", "VaultBase"]


class VaultBase(DeclarativeBase):
    pass


class MetaRow(VaultBase):
    __tablename__ = "vault_meta"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)   # always 1
    vault_id: Mapped[str] = mapped_column(String(36))
    kdf: Mapped[str] = mapped_column(String(16))                 # argon2id | keyfile
    salt: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    params: Mapped[str] = mapped_column(Text)                    # JSON
    key_file: Mapped[str | None] = mapped_column(Text, nullable=True)
    check_blob: Mapped[bytes] = mapped_column(LargeBinary)
    generation: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    rotated_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class SecretRow(VaultBase):
    __tablename__ = "vault_secrets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(16))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)     # DEK sealed under the KEK
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)      # value sealed under the DEK
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("name", "version", name="uq_vault_secret_version"),)


class ReadRow(VaultBase):
    __tablename__ = "vault_reads"

    action_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    delivered_to: Mapped[str] = mapped_column(String(64))
    delivered_at: Mapped[float] = mapped_column(Float)
