"""Tables of the codes domain: signing keys, issued codes, list version counters.

* :class:`IssuerKeyRecord` holds every key the server signs with: the code-signing (issuer) keys
  (``role = CODE``, rotated by ``AdminService.RotateIssuerKey``) and the trust-list signing key
  (``role = LIST``) that signs the trust list and the revocation list. The private key is PKCS#8
  DER encrypted with AES-256-GCM under a key derived from the server secret
  (:mod:`healthcode.server.codes.keystore`); the public key is stored as SPKI DER.
* :class:`IssuedCodeRecord` remembers every issued code by its random ``cti`` so that online
  verification finds the person (the QR carries no person id) and printed codes can be revoked.
  Rows are purged once the code has expired
  (:func:`healthcode.server.codes.store.purge_expired_codes`).
* :class:`ListVersion` holds monotonic counters (``trust``, ``revocation``) that version the
  signed lists so verifiers can refuse rollbacks.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from healthcode.server.db.base import Base, new_id, utcnow

#: ``IssuerKeyRecord.role`` of code-signing keys.
ROLE_CODE = "CODE"
#: ``IssuerKeyRecord.role`` of the trust-list / revocation-list signing key.
ROLE_LIST = "LIST"

#: ``ListVersion.name`` of the trust list counter.
TRUST_LIST = "trust"
#: ``ListVersion.name`` of the revocation list counter.
REVOCATION_LIST = "revocation"


class IssuerKeyRecord(Base):
    """A signing key of the platform (code issuer key or list-signing key)."""

    __tablename__ = "issuer_keys"
    __table_args__ = (Index("ix_issuer_keys_role_status", "role", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    #: ``CODE`` (signs health codes) or ``LIST`` (signs trust and revocation lists).
    role: Mapped[str] = mapped_column(String(8))
    #: First 8 bytes of SHA-256 of the SPKI DER (not unique by construction).
    kid: Mapped[bytes] = mapped_column(LargeBinary(8), index=True)
    issuer: Mapped[str] = mapped_column(String(32))
    #: nonce (12 bytes) || AES-256-GCM(PKCS#8 DER), AAD = role + kid.
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    spki_der: Mapped[bytes] = mapped_column(LargeBinary)
    #: Start of the signing window.
    not_before: Mapped[dt.datetime] = mapped_column()
    #: End of the signing window (set to the rotation instant when the key is retired).
    sign_until: Mapped[dt.datetime] = mapped_column()
    #: End of validity for verification: ``sign_until`` + the longest code lifetime.
    not_after: Mapped[dt.datetime] = mapped_column()
    #: ``ACTIVE``, ``RETIRED`` or ``REVOKED`` (healthcode.codes.KeyStatus).
    status: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[dt.datetime | None] = mapped_column()


class IssuedCodeRecord(Base):
    """One issued code, by its random code id (``cti``). Purged after expiry."""

    __tablename__ = "issued_codes"
    __table_args__ = (
        Index("ix_issued_codes_person", "person_id", "kind"),
        Index("ix_issued_codes_expires_at", "expires_at"),
    )

    cti: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(32), ForeignKey("persons.id"))
    #: 1 dynamic, 2 printed (CodeKind).
    kind: Mapped[int] = mapped_column(Integer)
    #: Colour signed into the code (1 green, 2 yellow, 3 red).
    signed_color: Mapped[int] = mapped_column(Integer)
    kid: Mapped[bytes] = mapped_column(LargeBinary(8))
    #: Account that asked for the code.
    issued_by: Mapped[str] = mapped_column(String(32))
    issued_at: Mapped[dt.datetime] = mapped_column()
    expires_at: Mapped[dt.datetime] = mapped_column()
    revoked_at: Mapped[dt.datetime | None] = mapped_column()


class ListVersion(Base):
    """A monotonic version counter of a signed list (``trust`` or ``revocation``)."""

    __tablename__ = "code_list_versions"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


#: The brief's name for the revocation counter table.
RevocationListVersion = ListVersion
