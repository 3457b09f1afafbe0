"""Settings of the vault process (env prefix ``HEALTHCODE_VAULT_``; values passed in code win).

The data directory comes from ``HEALTHCODE_HOME`` (default ``~/.healthcode``); the vault keeps its
SQLite database, local key file, policy file and credential files under ``$HEALTHCODE_HOME/vault/``.
The transit backend reads the standard ``VAULT_ADDR`` / ``VAULT_TOKEN`` (or AppRole
``VAULT_ROLE_ID`` / ``VAULT_SECRET_ID``) variables, like every HashiCorp Vault client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_LISTEN = "127.0.0.1:50052"
PLATFORM_CREDENTIAL_FILE = "platform-server.credential"
OFFICER_CREDENTIAL_FILE = "security-officer.credential"


def _default_home() -> Path:
    return Path("~/.healthcode").expanduser()


class VaultSettings(BaseSettings):
    """Everything the vault process needs; frozen so that one instance can be shared freely."""

    model_config = SettingsConfigDict(
        env_prefix="HEALTHCODE_VAULT_", frozen=True, populate_by_name=True, extra="forbid"
    )

    home: Path = Field(
        default_factory=_default_home,
        validation_alias=AliasChoices("HEALTHCODE_VAULT_HOME", "HEALTHCODE_HOME"),
        description="The platform data directory; the vault uses its vault/ subdirectory.",
    )
    listen: str = Field(
        default=DEFAULT_LISTEN, description="host:port for gRPC; port 0 picks a free one."
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite:///$HEALTHCODE_HOME/vault/vault.sqlite3.",
    )
    backend: Literal["local", "transit"] = "local"
    key_file: Path | None = Field(
        default=None, description="Local backend key file (default under vault/)."
    )

    transit_addr: str | None = Field(
        default=None, validation_alias=AliasChoices("HEALTHCODE_VAULT_TRANSIT_ADDR", "VAULT_ADDR")
    )
    transit_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("HEALTHCODE_VAULT_TRANSIT_TOKEN", "VAULT_TOKEN"),
    )
    approle_role_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("HEALTHCODE_VAULT_APPROLE_ROLE_ID", "VAULT_ROLE_ID"),
    )
    approle_secret_id: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("HEALTHCODE_VAULT_APPROLE_SECRET_ID", "VAULT_SECRET_ID"),
    )
    transit_namespace: str | None = Field(
        default=None,
        validation_alias=AliasChoices("HEALTHCODE_VAULT_TRANSIT_NAMESPACE", "VAULT_NAMESPACE"),
    )
    transit_cacert: str | None = Field(
        default=None,
        validation_alias=AliasChoices("HEALTHCODE_VAULT_TRANSIT_CACERT", "VAULT_CACERT"),
    )
    transit_mount: str = "transit"
    transit_kek_name: str = "healthcode-vault-kek"
    transit_bidx_name: str = "healthcode-vault-bidx"
    transit_timeout: float = Field(default=3.0, gt=0, description="Seconds per transit HTTP call.")
    transit_batch_size: int = Field(
        default=250, gt=0, le=300, description="Items per transit batch call."
    )

    policy_file: Path | None = Field(
        default=None, description="Access policy (TOML); default under vault/."
    )
    dek_cache_size: int = Field(
        default=100_000, ge=0, description="Unwrapped data keys kept in memory."
    )
    dek_cache_ttl: float = Field(
        default=600.0, ge=0, description="Seconds an unwrapped data key is kept."
    )
    backend_check_interval: float = Field(
        default=1.0, gt=0, description="Seconds between key backend health probes while serving."
    )
    audit_root_interval: float = Field(
        default=60.0, gt=0, description="Seconds between signed roots."
    )
    audit_index_interval: float = Field(
        default=2.0, gt=0, description="Seconds between token-index updates of the audit log."
    )
    max_batch: int = Field(default=1000, gt=0, description="Maximum items per batch call.")

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = Field(
        default=None, description="When set, clients must present a certificate signed by this CA."
    )
    mtls_identities: dict[str, str] = Field(
        default_factory=dict,
        description="Certificate common name -> role, for callers authenticated by mTLS alone.",
    )

    @property
    def vault_dir(self) -> Path:
        """``$HEALTHCODE_HOME/vault``."""
        return self.home.expanduser() / "vault"

    @property
    def effective_database_url(self) -> str:
        """The database URL to use (the SQLite file under the data directory by default)."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.vault_dir / 'vault.sqlite3'}"

    @property
    def effective_key_file(self) -> Path:
        """The local backend's key file."""
        return self.key_file or self.vault_dir / "keys.json"

    @property
    def effective_policy_file(self) -> Path:
        """The access policy file."""
        return self.policy_file or self.vault_dir / "policy.toml"

    @property
    def platform_credential_file(self) -> Path:
        """The credential file the platform server reads (created on first start, mode 0600)."""
        return self.vault_dir / PLATFORM_CREDENTIAL_FILE

    @property
    def officer_credential_file(self) -> Path:
        """The first security officer's credential file (created on first start, mode 0600)."""
        return self.vault_dir / OFFICER_CREDENTIAL_FILE
