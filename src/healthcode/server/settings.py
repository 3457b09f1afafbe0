"""Settings of the platform server process (env prefix ``HEALTHCODE_``).

Values passed in code win over the environment, which keeps tests simple::

    ServerSettings(home=tmp_path, database_url="sqlite:///...")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    """``HEALTHCODE_HOME`` or ``~/.healthcode``: databases, keys, logs, the SMS outbox."""
    return Path(os.environ.get("HEALTHCODE_HOME") or Path.home() / ".healthcode")


class ServerSettings(BaseSettings):
    """Everything the server process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="HEALTHCODE_", frozen=True, extra="ignore")

    home: Path = Field(default_factory=default_home)
    #: SQLAlchemy URL; default ``sqlite:///$HEALTHCODE_HOME/server/server.sqlite3``.
    database_url: str = ""
    listen: str = "127.0.0.1:50051"
    #: Address of the privacy vault. (``HEALTHCODE_VAULT_*`` belongs to the vault process itself,
    #: hence the ``PRIVACY_VAULT`` prefix here.)
    privacy_vault_address: str = "127.0.0.1:50052"
    #: The server's vault credential; read from ``privacy_vault_credential_file`` when empty.
    privacy_vault_credential: SecretStr = SecretStr("")
    #: Default: ``$HEALTHCODE_HOME/vault/platform-server.credential`` (the vault writes it on
    #: first start).
    privacy_vault_credential_file: Path | None = None
    #: Issuer id signed into codes.
    issuer: str = "CN-510400"
    dynamic_code_seconds: int = Field(default=300, ge=30, le=3600)
    offline_code_max_days: int = Field(default=7, ge=1, le=7)
    clock_skew_seconds: int = Field(default=60, ge=0, le=600)
    access_token_seconds: int = Field(default=3600, ge=60)
    refresh_token_seconds: int = Field(default=30 * 86400, ge=600)
    #: SMS sender: ``outbox`` writes codes to ``$HEALTHCODE_HOME/sms-outbox.jsonl`` (development).
    sms_sender: Literal["outbox"] = "outbox"
    otp_seconds: int = Field(default=300, ge=60, le=900)
    otp_max_attempts: int = Field(default=5, ge=1, le=20)
    #: SMS codes per phone per hour and per peer per hour.
    otp_per_phone_per_hour: int = Field(default=5, ge=1)
    otp_per_peer_per_hour: int = Field(default=30, ge=1)
    #: Logins per peer per minute (all phones).
    login_per_peer_per_minute: int = Field(default=60, ge=1)
    retention_days: int = Field(default=28, ge=1, le=365)
    #: TLS: server certificate and key (PEM); plaintext when unset.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: CA bundle for client certificates; setting it turns on mTLS (clients must present one).
    tls_client_ca_file: Path | None = None
    #: CA that signed the vault's certificate; TLS to the vault when set.
    privacy_vault_tls_ca_file: Path | None = None
    privacy_vault_tls_cert_file: Path | None = None
    privacy_vault_tls_key_file: Path | None = None
    log_level: str = "INFO"
    #: Worker threads for database work.
    db_threads: int = Field(default=8, ge=1, le=64)

    @model_validator(mode="after")
    def _defaults(self) -> ServerSettings:
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite:///{self.server_dir / 'server.sqlite3'}"
            )
        if self.privacy_vault_credential_file is None:
            object.__setattr__(
                self,
                "privacy_vault_credential_file",
                self.home / "vault" / "platform-server.credential",
            )
        return self

    @property
    def server_dir(self) -> Path:
        """Where the server keeps its files."""
        return self.home / "server"

    @property
    def sms_outbox(self) -> Path:
        """The development SMS outbox."""
        return self.home / "sms-outbox.jsonl"

    def privacy_vault_credential_value(self) -> str:
        """The credential for calls to the vault."""
        if self.privacy_vault_credential.get_secret_value():
            return self.privacy_vault_credential.get_secret_value()
        assert self.privacy_vault_credential_file is not None
        return self.privacy_vault_credential_file.read_text(encoding="utf-8").strip()
