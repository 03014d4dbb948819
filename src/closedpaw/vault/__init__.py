"""The vault (layer L1: imports only ``errors`` and ``settings``): secrets encrypted with
AES-256-GCM in the gate's database, levels mapped to roles, rotation, a resolver for
``secret:NAME`` references, and the redactor that keeps values out of logs and responses."""

from closedpaw.vault.crypto import KdfParams
from closedpaw.vault.levels import Level, may_read, needs_admin_approval
from closedpaw.vault.redact import RedactingFilter, Redactor, install_log_redaction
from closedpaw.vault.vault import SecretInfo, Vault

__all__ = ["KdfParams", "Level", "RedactingFilter", "Redactor", "SecretInfo", "Vault",
           "install_log_redaction", "may_read", "needs_admin_approval"]
