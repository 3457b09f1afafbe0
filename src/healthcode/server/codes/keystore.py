"""The issuer key store: code-signing keys, the list-signing key, trust and revocation lists.

Keys live in the database (:class:`~healthcode.server.codes.models.IssuerKeyRecord`), private
halves as PKCS#8 DER encrypted with AES-256-GCM under a key derived (HKDF-SHA256) from the server
secret, so a database dump alone does not reveal them. Every replica shares the database and the
secret, so every replica signs with the same active key.

:class:`KeyStore` keeps an immutable :class:`KeySnapshot` in memory (signer, verifier, key ring,
list signer). The hot paths (VerifyCode, BatchVerifyCodes, IssueCode) read it without any I/O; it
is reloaded from the database in the background every :data:`REFRESH_SECONDS` (stale-while-
revalidate: callers never wait for the reload), and at once after this replica rotates, so another
replica picks up a rotation within a few seconds. Codes signed by a replica that has not yet seen a
rotation still verify: the retired key keeps verifying everything issued inside its signing
window (plus the clock skew) until those codes expire.

First use creates the first code-signing key and the list-signing key (serialised by a row lock on
the trust-list version counter, so two replicas starting together create one key each, not two).

Public API used by other domains::

    keys = KeyStore(db, settings, secret)          # Platform.keys
    issuer = await keys.signer()                   # CodeIssuer of the active key
    new_kid, retired_kid = await keys.rotate()     # AdminService.RotateIssuerKey
    snapshot = await keys.trust_list()             # signed trust list
    snapshot = await keys.revocation_list()        # signed revocation list
    count, version = revoke_person_offline_codes(session, person_id, now)  # RevokeOfflineCodes
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from dataclasses import dataclass

import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from healthcode.codes import (
    MAX_CODE_LIFETIME,
    CodeIssuer,
    CodeKind,
    CodeVerifier,
    IssuerKey,
    KeyRing,
    KeyStatus,
    VerifierKey,
    generate_private_key,
    kid_for,
    sign_revocation_list,
    sign_trust_list,
    spki_der,
)
from healthcode.server.codes.models import (
    REVOCATION_LIST,
    ROLE_CODE,
    ROLE_LIST,
    TRUST_LIST,
    IssuedCodeRecord,
    IssuerKeyRecord,
    ListVersion,
)
from healthcode.server.db.base import new_id, utcnow
from healthcode.server.db.engine import Database
from healthcode.server.settings import ServerSettings

log = structlog.get_logger("healthcode.codes.keys")

#: How often the in-memory key snapshot is reloaded from the database.
REFRESH_SECONDS = 5.0
#: How long a code-signing key may sign before it must be rotated (a rotation ends it earlier).
CODE_KEY_SIGNING_DAYS = 365
#: How long the list-signing key signs (it is pinned by verifiers; rotate it deliberately).
LIST_KEY_SIGNING_DAYS = 3650
#: How long a signed revocation list is reused before it is rebuilt (version changes rebuild it).
REVOCATION_CACHE_SECONDS = 30.0
#: How long a signed trust list is reused (version changes rebuild it at once).
TRUST_CACHE_SECONDS = 3600.0

_WRAP_INFO = b"healthcode/issuer-key-wrap/v1"


def _unix(value: dt.datetime) -> int:
    return int(value.timestamp())


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One code-signing key as published in the trust list."""

    kid: bytes
    issuer: str
    spki_der: bytes
    not_before: dt.datetime
    sign_until: dt.datetime
    #: End of validity for verification (``sign_until`` + longest code lifetime).
    not_after: dt.datetime
    status: KeyStatus
    verifier: VerifierKey


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """What one replica knows about keys at one moment; immutable, swapped as a whole."""

    issuer: CodeIssuer
    verifier: CodeVerifier
    keys: tuple[KeyInfo, ...]
    list_signer: IssuerKey
    trust_version: int
    loaded_at: float

    @property
    def active_kid(self) -> bytes:
        """Kid of the key new codes are signed with."""
        return self.issuer.key.kid


@dataclass(frozen=True, slots=True)
class SignedTrustList:
    """The trust list: keys, the signed COSE form, the signer's SPKI, when and which version."""

    keys: tuple[KeyInfo, ...]
    signed: bytes
    signer_spki_der: bytes
    issued_at: dt.datetime
    version: int


@dataclass(frozen=True, slots=True)
class SignedRevocationList:
    """The revocation list: revoked printed-code ids, the signed COSE form, version and time."""

    revoked: tuple[bytes, ...]
    signed: bytes
    version: int
    issued_at: dt.datetime


class KeyWrap:
    """AES-256-GCM encryption of private keys at rest, keyed from the server secret."""

    def __init__(self, secret: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_WRAP_INFO).derive(secret)
        self._aead = AESGCM(key)

    def seal(self, der: bytes, role: str, kid: bytes) -> bytes:
        """nonce || ciphertext of a PKCS#8 DER private key."""
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, der, role.encode() + kid)

    def open(self, blob: bytes, role: str, kid: bytes) -> bytes:
        """The PKCS#8 DER of a sealed key (raises if the secret or the record is wrong)."""
        return self._aead.decrypt(blob[:12], blob[12:], role.encode() + kid)


# --------------------------------------------------------------------------------------------
# Store functions (sync, run inside a unit of work)


def _bump(session: Session, name: str, now: dt.datetime) -> int:
    """Increment a list version counter atomically; return the new version."""
    _ensure_counter(session, name, now)
    session.execute(
        update(ListVersion)
        .where(ListVersion.name == name)
        .values(version=ListVersion.version + 1, updated_at=now)
    )
    version = session.scalar(select(ListVersion.version).where(ListVersion.name == name))
    assert version is not None
    return int(version)


def _ensure_counter(session: Session, name: str, now: dt.datetime) -> None:
    values = {"name": name, "version": 0, "updated_at": now}
    if session.get_bind().dialect.name == "postgresql":
        session.execute(pg_insert(ListVersion).values(**values).on_conflict_do_nothing())
    else:
        session.execute(sqlite_insert(ListVersion).values(**values).on_conflict_do_nothing())


def _lock_keys(session: Session, now: dt.datetime) -> int:
    """Serialise key changes between replicas: lock the trust-list counter row."""
    _ensure_counter(session, TRUST_LIST, now)
    version = session.scalar(
        select(ListVersion.version).where(ListVersion.name == TRUST_LIST).with_for_update()
    )
    return int(version or 0)


def _new_key_record(
    wrap: KeyWrap, role: str, issuer: str, now: dt.datetime, signing_days: int
) -> tuple[IssuerKeyRecord, bytes]:
    private = generate_private_key()
    public = private.public_key()
    kid = kid_for(public)
    sign_until = now + dt.timedelta(days=signing_days)
    record = IssuerKeyRecord(
        id=new_id(),
        role=role,
        kid=kid,
        issuer=issuer,
        private_key_encrypted=wrap.seal(
            IssuerKey(private, issuer, _unix(now), _unix(sign_until)).private_der(), role, kid
        ),
        spki_der=spki_der(public),
        not_before=now,
        sign_until=sign_until,
        not_after=sign_until + dt.timedelta(seconds=MAX_CODE_LIFETIME),
        status=KeyStatus.ACTIVE.value,
        created_at=now,
    )
    return record, kid


def _active(session: Session, role: str) -> list[IssuerKeyRecord]:
    return list(
        session.scalars(
            select(IssuerKeyRecord)
            .where(IssuerKeyRecord.role == role, IssuerKeyRecord.status == KeyStatus.ACTIVE.value)
            .order_by(IssuerKeyRecord.created_at.desc(), IssuerKeyRecord.id)
        )
    )


def ensure_keys(session: Session, wrap: KeyWrap, issuer: str, now: dt.datetime) -> bool:
    """Create the first code-signing key and the list-signing key if missing; True if created."""
    if _active(session, ROLE_CODE) and _active(session, ROLE_LIST):
        return False
    _lock_keys(session, now)
    created = False
    for role, days in ((ROLE_CODE, CODE_KEY_SIGNING_DAYS), (ROLE_LIST, LIST_KEY_SIGNING_DAYS)):
        if not _active(session, role):
            record, kid = _new_key_record(wrap, role, issuer, now, days)
            session.add(record)
            created = True
            log.info("signing key created", role=role, kid=kid.hex())
    if created:
        session.flush()
        _bump(session, TRUST_LIST, now)
    return created


def rotate_code_key(
    session: Session, wrap: KeyWrap, issuer: str, now: dt.datetime
) -> tuple[str, str]:
    """Retire the active code-signing key(s) and create a new one; return (new, retired) kid hex."""
    _lock_keys(session, now)
    retired = _active(session, ROLE_CODE)
    for record in retired:
        record.status = KeyStatus.RETIRED.value
        record.sign_until = max(record.not_before, now)
        record.not_after = record.sign_until + dt.timedelta(seconds=MAX_CODE_LIFETIME)
        record.retired_at = now
    new_record, kid = _new_key_record(wrap, ROLE_CODE, issuer, now, CODE_KEY_SIGNING_DAYS)
    session.add(new_record)
    session.flush()
    _bump(session, TRUST_LIST, now)
    log.info("issuer key rotated", kid=kid.hex(), retired=[r.kid.hex() for r in retired])
    return kid.hex(), (retired[0].kid.hex() if retired else "")


def revoke_person_offline_codes(
    session: Session, person_id: str, now: dt.datetime
) -> tuple[int, int]:
    """Revoke every unexpired printed code of a person; return (count, revocation list version).

    The version is bumped only when something was revoked. Revoked codes appear on the signed
    revocation list until they expire and fail online verification with ``CODE_REVOKED``.
    """
    result = session.execute(
        update(IssuedCodeRecord)
        .where(
            IssuedCodeRecord.person_id == person_id,
            IssuedCodeRecord.kind == int(CodeKind.PRINTED),
            IssuedCodeRecord.revoked_at.is_(None),
            IssuedCodeRecord.expires_at > now,
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    if count:
        return count, _bump(session, REVOCATION_LIST, now)
    _ensure_counter(session, REVOCATION_LIST, now)
    version = session.scalar(select(ListVersion.version).where(ListVersion.name == REVOCATION_LIST))
    return 0, int(version or 0)


def revoked_code_ids(
    session: Session, now: dt.datetime, known_version: int | None = None
) -> tuple[int, list[bytes] | None]:
    """The revocation list version and the ids of revoked codes that have not expired.

    When the version equals ``known_version`` the ids are not read (None).
    """
    _ensure_counter(session, REVOCATION_LIST, now)
    version = session.scalar(select(ListVersion.version).where(ListVersion.name == REVOCATION_LIST))
    if known_version is not None and version == known_version:
        return known_version, None
    ctis = session.scalars(
        select(IssuedCodeRecord.cti).where(
            IssuedCodeRecord.revoked_at.is_not(None), IssuedCodeRecord.expires_at > now
        )
    )
    return int(version or 0), sorted(ctis)


@dataclass(frozen=True, slots=True)
class _Loaded:
    code_keys: list[tuple[IssuerKeyRecord, bytes | None]]
    list_key: tuple[IssuerKeyRecord, bytes]
    trust_version: int


def _load(session: Session, wrap: KeyWrap, issuer: str) -> _Loaded:
    now = utcnow()
    ensure_keys(session, wrap, issuer, now)
    records = list(
        session.scalars(
            select(IssuerKeyRecord)
            .where(IssuerKeyRecord.not_after >= now)
            .order_by(IssuerKeyRecord.created_at.desc(), IssuerKeyRecord.id)
        )
    )
    code_keys: list[tuple[IssuerKeyRecord, bytes | None]] = []
    list_key: tuple[IssuerKeyRecord, bytes] | None = None
    for record in records:
        active = record.status == KeyStatus.ACTIVE.value
        if record.role == ROLE_LIST:
            if active and list_key is None:
                list_key = (record, wrap.open(record.private_key_encrypted, ROLE_LIST, record.kid))
            continue
        has_signer = any(der is not None for _, der in code_keys)
        der = (
            wrap.open(record.private_key_encrypted, ROLE_CODE, record.kid)
            if active and not has_signer
            else None
        )
        code_keys.append((record, der))
    assert list_key is not None
    version = session.scalar(select(ListVersion.version).where(ListVersion.name == TRUST_LIST))
    return _Loaded(code_keys, list_key, int(version or 0))


# --------------------------------------------------------------------------------------------
# The key store


class KeyStore:
    """Cached signing and verification keys shared by the services of one server process."""

    def __init__(self, db: Database, settings: ServerSettings, secret: bytes) -> None:
        self._db = db
        self._settings = settings
        self._wrap = KeyWrap(secret)
        self._snapshot: KeySnapshot | None = None
        self._refreshing: asyncio.Task[KeySnapshot] | None = None
        self._trust: SignedTrustList | None = None
        self._revocation: tuple[float, SignedRevocationList] | None = None

    # -- snapshots ------------------------------------------------------------------------

    def _build(self, loaded: _Loaded) -> KeySnapshot:
        settings = self._settings
        infos: list[KeyInfo] = []
        signer: IssuerKey | None = None
        for record, der in loaded.code_keys:
            status = KeyStatus(record.status)
            not_before, sign_until = _unix(record.not_before), _unix(record.sign_until)
            if der is not None:
                signer = IssuerKey.from_der(
                    der,
                    issuer=record.issuer,
                    not_before=not_before,
                    not_after=sign_until,
                    status=status,
                )
                verifier_key = signer.public
            else:
                verifier_key = VerifierKey.from_spki_der(
                    record.spki_der,
                    issuer=record.issuer,
                    not_before=not_before,
                    not_after=sign_until,
                    status=status,
                )
            infos.append(
                KeyInfo(
                    kid=record.kid,
                    issuer=record.issuer,
                    spki_der=record.spki_der,
                    not_before=record.not_before,
                    sign_until=record.sign_until,
                    not_after=record.not_after,
                    status=status,
                    verifier=verifier_key,
                )
            )
        if signer is None:  # pragma: no cover - ensure_keys guarantees an active key
            raise RuntimeError("no active issuer key")
        list_record, list_der = loaded.list_key
        list_signer = IssuerKey.from_der(
            list_der,
            issuer=list_record.issuer,
            not_before=_unix(list_record.not_before),
            not_after=_unix(list_record.sign_until),
        )
        return KeySnapshot(
            issuer=CodeIssuer(
                signer,
                dynamic_ttl=settings.dynamic_code_seconds,
                printed_ttl=settings.offline_code_max_days * 86400,
            ),
            verifier=CodeVerifier(
                KeyRing(info.verifier for info in infos),
                clock_skew=settings.clock_skew_seconds,
            ),
            keys=tuple(infos),
            list_signer=list_signer,
            trust_version=loaded.trust_version,
            loaded_at=time.monotonic(),
        )

    async def reload(self) -> KeySnapshot:
        """Reload keys from the database now (creating the first keys if there are none)."""
        loaded = await self._db.run(_load, self._wrap, self._settings.issuer)
        snapshot = self._build(loaded)
        self._snapshot = snapshot
        return snapshot

    async def snapshot(self) -> KeySnapshot:
        """The current keys; never waits for the database except on first use.

        A snapshot older than :data:`REFRESH_SECONDS` is still returned, and a reload starts in
        the background (one at a time).
        """
        snapshot = self._snapshot
        if snapshot is None:
            return await self._refresh()
        if time.monotonic() - snapshot.loaded_at >= REFRESH_SECONDS and self._refreshing is None:
            self._refreshing = asyncio.get_running_loop().create_task(self.reload())
            self._refreshing.add_done_callback(self._refresh_done)
        return snapshot

    async def _refresh(self) -> KeySnapshot:
        task = self._refreshing
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.get_running_loop().create_task(self.reload())
            task.add_done_callback(self._refresh_done)
            self._refreshing = task
        return await asyncio.shield(task)

    def _refresh_done(self, task: asyncio.Task[KeySnapshot]) -> None:
        if self._refreshing is task:
            self._refreshing = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("key reload failed", error_type=type(task.exception()).__name__)

    async def signer(self) -> CodeIssuer:
        """The issuer of new codes (active key, configured lifetimes)."""
        return (await self.snapshot()).issuer

    async def verifier(self) -> CodeVerifier:
        """The verifier over every key whose codes may still be valid (the verification ring)."""
        return (await self.snapshot()).verifier

    async def key_ring(self) -> KeyRing:
        """The verification key ring."""
        return (await self.snapshot()).verifier.keys

    # -- rotation -------------------------------------------------------------------------

    async def rotate(self) -> tuple[str, str]:
        """Retire the active code-signing key and start a new one; return (new, retired) kid hex.

        Old keys keep verifying the codes they signed until those expire. This replica switches
        at once; other replicas within :data:`REFRESH_SECONDS`.
        """
        await self.snapshot()  # make sure the first keys exist
        result = await self._db.run(rotate_code_key, self._wrap, self._settings.issuer, utcnow())
        await self.reload()
        return result

    # -- signed lists ---------------------------------------------------------------------

    async def trust_list(self) -> SignedTrustList:
        """Every code-signing key still able to verify something, signed by the list key."""
        snapshot = await self.snapshot()
        cached = self._trust
        if (
            cached is not None
            and cached.version == snapshot.trust_version
            and cached.keys is snapshot.keys
            and time.time() - cached.issued_at.timestamp() < TRUST_CACHE_SECONDS
        ):
            return cached
        now = utcnow()
        signed = sign_trust_list(
            snapshot.list_signer,
            [info.verifier for info in snapshot.keys],
            version=snapshot.trust_version,
            now=now.timestamp(),
        )
        result = SignedTrustList(
            keys=snapshot.keys,
            signed=signed,
            signer_spki_der=snapshot.list_signer.public.spki_der,
            issued_at=now.replace(microsecond=0),
            version=snapshot.trust_version,
        )
        self._trust = result
        return result

    async def revocation_list(self) -> SignedRevocationList:
        """Revoked printed codes that have not expired, signed by the list key.

        One small query per call checks the version; the list is rebuilt and re-signed when the
        version changed or the cached one is older than :data:`REVOCATION_CACHE_SECONDS`.
        """
        snapshot = await self.snapshot()
        cached = self._revocation
        fresh = cached is not None and time.monotonic() - cached[0] < REVOCATION_CACHE_SECONDS
        now = utcnow()
        version, ctis = await self._db.run(
            revoked_code_ids, now, cached[1].version if cached is not None and fresh else None
        )
        if ctis is None:
            assert cached is not None
            return cached[1]
        signed = sign_revocation_list(
            snapshot.list_signer, ctis, version=version, now=now.timestamp()
        )
        result = SignedRevocationList(
            revoked=tuple(ctis),
            signed=signed,
            version=version,
            issued_at=now.replace(microsecond=0),
        )
        self._revocation = (time.monotonic(), result)
        return result


__all__ = [
    "KeyInfo",
    "KeySnapshot",
    "KeyStore",
    "KeyWrap",
    "SignedRevocationList",
    "SignedTrustList",
    "ensure_keys",
    "revoke_person_offline_codes",
    "revoked_code_ids",
    "rotate_code_key",
]
