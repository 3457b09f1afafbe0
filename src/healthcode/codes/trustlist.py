"""Signed trust lists and revocation lists for offline verifiers (edge agents, partners).

Both are COSE_Sign1 messages (tag 18, ES256, raw signature, protected ``alg``/``kid``) like the
codes themselves, signed by a dedicated list-signing key whose public half verifiers receive out of
band (the *anchors*). The protected header also carries a content type (label 3) so that one kind
of signed object cannot be passed off as another. They are exchanged as bytes, without the
``JKM1:``/base45/zlib envelope.

Trust list payload (CBOR map, text keys)::

    {"iss": "CN-510400", "iat": 1700000000, "version": 42,
     "keys": [{"kid": h'..8 bytes..', "alg": -7, "spki": h'..DER..', "issuer": "CN-510400",
               "not_before": 1690000000, "not_after": 1710000000, "status": "ACTIVE"}, ...]}

Revocation list payload::

    {"iss": "CN-510400", "iat": 1700000000, "version": 7, "revoked": [h'..cti..', ...]}

``version`` grows with every list; verifiers pass the last version they accepted as
``min_version`` so that an older list cannot be replayed (``TRUST_LIST_ROLLBACK``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import UnsupportedAlgorithm

from healthcode.codes import cose
from healthcode.codes.cbor import cbor_loads_strict
from healthcode.codes.errors import CodeRejected, TrustListRejected
from healthcode.codes.keys import ALG_ES256, IssuerKey, KeyRing, KeyStatus, VerifierKey

TRUST_LIST_CONTENT_TYPE = "application/jkm-trust-list+cbor"
REVOCATION_LIST_CONTENT_TYPE = "application/jkm-revocation-list+cbor"

MALFORMED = "TRUST_LIST_MALFORMED"
UNKNOWN_KID = "TRUST_LIST_UNKNOWN_KID"
BAD_SIGNATURE = "TRUST_LIST_BAD_SIGNATURE"
WRONG_TYPE = "TRUST_LIST_WRONG_TYPE"
ROLLBACK = "TRUST_LIST_ROLLBACK"

_LIST_LABELS = frozenset({cose.HEADER_ALG, cose.HEADER_CONTENT_TYPE, cose.HEADER_KID})


@dataclass(frozen=True, slots=True)
class TrustList:
    """A verified trust list: every issuer key with its window and status."""

    issuer: str
    issued_at: int
    version: int
    keys: tuple[VerifierKey, ...]

    def key_ring(self) -> KeyRing:
        """The keys as a :class:`KeyRing` for :class:`~healthcode.codes.CodeVerifier`."""
        return KeyRing(self.keys)


@dataclass(frozen=True, slots=True)
class RevocationList:
    """A verified revocation list: the ``cti`` values of revoked codes."""

    issuer: str
    issued_at: int
    version: int
    revoked: frozenset[bytes]


def _sign_list(signer: IssuerKey, content_type: str, body: dict[str, Any]) -> bytes:
    protected = cose.encode_protected(signer.kid, {cose.HEADER_CONTENT_TYPE: content_type})
    return cose.sign1(signer, cbor2.dumps(body), protected=protected)


def _signing_time(signer: IssuerKey, now: float | None, version: int) -> int:
    issued_at = int(time.time() if now is None else now)
    if not signer.can_sign_at(issued_at):
        raise ValueError("the list-signing key is not active at this time")
    if type(version) is not int or version < 0:
        raise ValueError("version must be a non-negative integer")
    return issued_at


def sign_trust_list(
    signer: IssuerKey,
    keys: Iterable[VerifierKey | IssuerKey],
    *,
    version: int,
    now: float | None = None,
) -> bytes:
    """Sign a trust list of ``keys`` (public halves only are published) with ``signer``."""
    issued_at = _signing_time(signer, now, version)
    entries = []
    for item in keys:
        key = item.public if isinstance(item, IssuerKey) else item
        entries.append(
            {
                "kid": key.kid,
                "alg": key.alg,
                "spki": key.spki_der,
                "issuer": key.issuer,
                "not_before": key.not_before,
                "not_after": key.not_after,
                "status": str(key.status),
            }
        )
    body = {"iss": signer.issuer, "iat": issued_at, "version": version, "keys": entries}
    return _sign_list(signer, TRUST_LIST_CONTENT_TYPE, body)


def sign_revocation_list(
    signer: IssuerKey, revoked: Iterable[bytes], *, version: int, now: float | None = None
) -> bytes:
    """Sign a revocation list of code ids (``cti``) with ``signer``."""
    issued_at = _signing_time(signer, now, version)
    ctis = sorted(set(revoked))
    if not all(isinstance(c, bytes) and c for c in ctis):
        raise ValueError("revoked code ids are non-empty byte strings")
    body = {"iss": signer.issuer, "iat": issued_at, "version": version, "revoked": ctis}
    return _sign_list(signer, REVOCATION_LIST_CONTENT_TYPE, body)


def _verify_list(
    data: bytes, anchors: KeyRing, content_type: str, min_version: int
) -> dict[str, Any]:
    try:
        message = cose.parse_sign1(bytes(data), allowed_labels=_LIST_LABELS)
    except CodeRejected as rejected:
        raise TrustListRejected(MALFORMED, rejected.detail) from None
    if message.header.get(cose.HEADER_CONTENT_TYPE) != content_type:
        raise TrustListRejected(WRONG_TYPE, f"content type is not {content_type}")
    candidates = [k for k in anchors.get(message.kid) if k.status is not KeyStatus.REVOKED]
    if not candidates:
        raise TrustListRejected(UNKNOWN_KID, "no trusted list-signing key has this kid")
    if len(message.signature) != cose.SIGNATURE_LENGTH or not any(
        cose.verify_signature(k.public_key, message.protected, message.payload, message.signature)
        for k in candidates
    ):
        raise TrustListRejected(BAD_SIGNATURE, "the list signature does not verify")
    try:
        body = cbor_loads_strict(message.payload, "list payload")
    except CodeRejected as rejected:
        raise TrustListRejected(MALFORMED, rejected.detail) from None
    if type(body) is not dict:
        raise TrustListRejected(MALFORMED, "list payload is not a map")
    _field(body, "iss", str)
    _field(body, "iat", int)
    version = _field(body, "version", int)
    if version < min_version:
        raise TrustListRejected(ROLLBACK, "list version is older than the one already accepted")
    return body


def _field(body: dict[Any, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if type(value) is not kind:
        raise TrustListRejected(MALFORMED, f"field {name} is missing or of the wrong type")
    return value


def verify_trust_list(data: bytes, anchors: KeyRing, *, min_version: int = 0) -> TrustList:
    """Verify a signed trust list against the list-signing ``anchors``.

    Raises :class:`TrustListRejected`. Each entry's kid must match its SPKI, its alg must be ES256.
    """
    body = _verify_list(data, anchors, TRUST_LIST_CONTENT_TYPE, min_version)
    entries = _field(body, "keys", list)
    keys: list[VerifierKey] = []
    for entry in entries:
        if type(entry) is not dict:
            raise TrustListRejected(MALFORMED, "a trust list entry is not a map")
        if _field(entry, "alg", int) != ALG_ES256:
            raise TrustListRejected(MALFORMED, "a trust list entry is not ES256")
        try:
            key = VerifierKey.from_spki_der(
                _field(entry, "spki", bytes),
                issuer=_field(entry, "issuer", str),
                not_before=_field(entry, "not_before", int),
                not_after=_field(entry, "not_after", int),
                status=KeyStatus(_field(entry, "status", str)),
            )
        except (ValueError, UnsupportedAlgorithm):
            raise TrustListRejected(MALFORMED, "a trust list entry has a bad key") from None
        if key.kid != _field(entry, "kid", bytes):
            raise TrustListRejected(MALFORMED, "a trust list entry's kid does not match its key")
        keys.append(key)
    return TrustList(body["iss"], body["iat"], body["version"], tuple(keys))


def verify_revocation_list(
    data: bytes, anchors: KeyRing, *, min_version: int = 0
) -> RevocationList:
    """Verify a signed revocation list against the list-signing ``anchors``."""
    body = _verify_list(data, anchors, REVOCATION_LIST_CONTENT_TYPE, min_version)
    revoked = _field(body, "revoked", list)
    if not all(type(c) is bytes for c in revoked):
        raise TrustListRejected(MALFORMED, "revoked entries must be byte strings")
    return RevocationList(body["iss"], body["iat"], body["version"], frozenset(revoked))
