"""Sessions: bearer tokens stored as SHA-256 hashes in ``AuthSession``, resolved on every call.

:class:`SessionAuthenticator` is what the auth interceptor calls. It keeps a small in-process cache
(TTL :data:`CACHE_SECONDS`, bounded) keyed by the token hash; a logout or refresh on this replica
invalidates it at once (:func:`invalidate_session`), other replicas see it within the TTL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from healthcode.server.auth.tokens import new_token, token_hash
from healthcode.server.common.principal import Principal, Role
from healthcode.server.db.base import utcnow
from healthcode.server.db.engine import Database
from healthcode.server.db.models import Account, AuthSession, Checkpoint, Device
from healthcode.server.settings import ServerSettings

CACHE_SECONDS = 5.0
CACHE_SIZE = 10_000
#: A cached entry this close to its expiry is reloaded in the background (and still served).
REFRESH_AHEAD_SECONDS = 1.0


@dataclass(frozen=True)
class IssuedSession:
    """The tokens of a new or refreshed session (plaintext, returned once to the client)."""

    session_id: str
    access_token: str
    refresh_token: str
    expires_at: dt.datetime
    account_id: str


def create_login_session(
    session: Session, account_id: str, *, settings: ServerSettings, now: dt.datetime
) -> IssuedSession:
    """A new access + refresh token pair for an account."""
    access, refresh = new_token(), new_token()
    expires = now + dt.timedelta(seconds=settings.access_token_seconds)
    row = AuthSession(
        access_hash=token_hash(access),
        refresh_hash=token_hash(refresh),
        account_id=account_id,
        expires_at=expires,
        refresh_expires_at=now + dt.timedelta(seconds=settings.refresh_token_seconds),
        revoked=False,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return IssuedSession(row.id, access, refresh, expires, account_id)


def rotate_refresh_token(
    session: Session, refresh_token: str, *, settings: ServerSettings, now: dt.datetime
) -> IssuedSession | None:
    """Replace both tokens of the session holding ``refresh_token``; None when it is not valid.

    The old refresh *and* access tokens stop working (their hashes are overwritten).
    """
    row = session.scalars(
        select(AuthSession)
        .where(AuthSession.refresh_hash == token_hash(refresh_token))
        .with_for_update()
    ).first()
    if (
        row is None
        or row.revoked
        or row.account_id is None
        or row.refresh_expires_at is None
        or row.refresh_expires_at <= now
    ):
        return None
    account = session.get(Account, row.account_id)
    if account is None or account.disabled:
        return None
    access, refresh = new_token(), new_token()
    row.access_hash = token_hash(access)
    row.refresh_hash = token_hash(refresh)
    row.expires_at = now + dt.timedelta(seconds=settings.access_token_seconds)
    row.refresh_expires_at = now + dt.timedelta(seconds=settings.refresh_token_seconds)
    return IssuedSession(row.id, access, refresh, row.expires_at, account.id)


def revoke_session(session: Session, session_id: str) -> None:
    """Mark a session revoked (logout)."""
    row = session.get(AuthSession, session_id)
    if row is not None:
        row.revoked = True


def resolve_session(
    session: Session, access_hash: bytes, now: dt.datetime
) -> tuple[Principal, dt.datetime | None] | None:
    """The principal behind an access-token hash and its expiry; None if unknown/expired/revoked."""
    row = session.scalars(select(AuthSession).where(AuthSession.access_hash == access_hash)).first()
    if row is None or row.revoked or (row.expires_at is not None and row.expires_at <= now):
        return None
    if row.device_id is not None:
        device = session.get(Device, row.device_id)
        if device is None or device.revoked:
            return None
        checkpoint = session.get(Checkpoint, device.checkpoint_id)
        return (
            Principal(
                id=device.id,
                role=Role.DEVICE,
                session_id=row.id,
                checkpoint_id=device.checkpoint_id,
                division_code=checkpoint.division_code if checkpoint else None,
                display_name=device.name,
            ),
            row.expires_at,
        )
    if row.account_id is None:
        return None
    account = session.get(Account, row.account_id)
    if account is None or account.disabled:
        return None
    try:
        role = Role(account.role)
    except ValueError:
        return None
    division = account.division_code
    if account.checkpoint_id and not division:
        checkpoint = session.get(Checkpoint, account.checkpoint_id)
        division = checkpoint.division_code if checkpoint else None
    return (
        Principal(
            id=account.id,
            role=role,
            session_id=row.id,
            checkpoint_id=account.checkpoint_id,
            division_code=division,
            person_id=account.person_id,
            display_name=account.display_name,
        ),
        row.expires_at,
    )


_AUTHENTICATORS: weakref.WeakSet[SessionAuthenticator] = weakref.WeakSet()


def invalidate_session(session_id: str) -> None:
    """Drop a session from every authenticator's cache in this process (logout, refresh)."""
    for auth in list(_AUTHENTICATORS):
        auth.invalidate(session_id)


def invalidate_account(account_id: str) -> None:
    """Drop every cached session of an account (after its person or role changed)."""
    for auth in list(_AUTHENTICATORS):
        auth.invalidate_principal(account_id)


class SessionAuthenticator:
    """Resolves bearer tokens for the auth interceptor, with a short bounded cache.

    A cache hit is a dict lookup on the event loop (no thread hop). Concurrent misses of one token
    share one database lookup, and an entry in the last :data:`REFRESH_AHEAD_SECONDS` of its TTL
    is reloaded in the background while it is still served (it is still inside its TTL), so a busy
    caller never waits on the expiry of its own cache entry. Invalidation bumps a generation
    counter: a lookup that started before a logout never re-inserts the stale principal.
    """

    def __init__(self, db: Database, *, ttl: float = CACHE_SECONDS, size: int = CACHE_SIZE) -> None:
        self._db = db
        self._ttl = min(ttl, CACHE_SECONDS)
        self._size = size
        self._cache: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0
        self._inflight: dict[bytes, asyncio.Task[Principal | None]] = {}
        _AUTHENTICATORS.add(self)

    async def authenticate(self, token: str) -> Principal | None:
        """The principal for ``token``, or None when unknown, expired or revoked."""
        if not token or len(token) > 512:
            return None
        digest = token_hash(token)
        mono = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and hit[1] <= mono:
                del self._cache[digest]
                hit = None
        if hit is not None:
            if hit[1] - mono < min(REFRESH_AHEAD_SECONDS, self._ttl / 2):
                self._lookup(digest)  # refresh ahead; this call is served from the cache
            return hit[0]
        return await asyncio.shield(self._lookup(digest))

    def _lookup(self, digest: bytes) -> asyncio.Task[Principal | None]:
        """The running lookup of ``digest`` (started if there is none on this loop)."""
        loop = asyncio.get_running_loop()
        task = self._inflight.get(digest)
        if task is None or task.get_loop() is not loop:
            task = loop.create_task(self._load(digest))
            self._inflight[digest] = task
            task.add_done_callback(functools.partial(self._lookup_done, digest))
        return task

    def _lookup_done(self, digest: bytes, task: asyncio.Task[Principal | None]) -> None:
        if self._inflight.get(digest) is task:
            del self._inflight[digest]
        if not task.cancelled():
            task.exception()  # retrieved: a failed background refresh is not "never retrieved"

    async def _load(self, digest: bytes) -> Principal | None:
        generation = self._generation
        now = utcnow()
        mono = time.monotonic()
        found = await self._db.run(resolve_session, digest, now)
        with self._lock:
            if found is None:
                self._cache.pop(digest, None)
                return None
            principal, expires_at = found
            if generation != self._generation:  # invalidated meanwhile: answer, do not cache
                return principal
            until = mono + self._ttl
            if expires_at is not None:
                until = min(until, mono + (expires_at - now).total_seconds())
            self._cache[digest] = (principal, until)
            self._cache.move_to_end(digest)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return principal

    def invalidate(self, session_id: str) -> None:
        """Forget cached entries of a session."""
        with self._lock:
            self._generation += 1
            for key in [k for k, (p, _) in self._cache.items() if p.session_id == session_id]:
                del self._cache[key]

    def invalidate_principal(self, principal_id: str) -> None:
        """Forget cached entries of an account or device."""
        with self._lock:
            self._generation += 1
            for key in [k for k, (p, _) in self._cache.items() if p.id == principal_id]:
                del self._cache[key]

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._generation += 1
            self._cache.clear()
