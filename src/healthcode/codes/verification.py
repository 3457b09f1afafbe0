"""Decoding and offline verification of health codes.

Order of checks (each failure raises one :class:`~healthcode.codes.errors.CodeRejected` subclass):

1. envelope: prefix, length cap, base45, one zlib stream under the inflate cap;
2. COSE_Sign1 shape, ES256, protected kid, CWT claims (all claims of DESIGN.md §3, well typed);
3. key: some trusted key of the code's issuer with this kid (:class:`UnknownKid`);
4. signature with every such key (:class:`BadSignature`); the key that verifies must not be revoked
   (:class:`CodeRevoked`) and the code's ``iat`` must fall in its signing window, +/- skew
   (:class:`UnknownKid`);
5. time: ``now >= exp + skew`` is :class:`CodeExpired`, ``iat > now + skew`` is
   :class:`CodeNotYetValid`;
6. revocation: ``cti`` in the revocation set is :class:`CodeRevoked`.

Online verification (current status of the person) is the server's job on top of this.
"""

from __future__ import annotations

import time
from collections.abc import Container, Iterable
from dataclasses import dataclass

from healthcode.codes import cose, envelope
from healthcode.codes.cbor import cbor_loads_strict
from healthcode.codes.claims import HealthCodeClaims
from healthcode.codes.errors import (
    BadSignature,
    CodeExpired,
    CodeNotYetValid,
    CodeRejected,
    CodeRevoked,
    UnknownKid,
)
from healthcode.codes.keys import KeyRing, KeyStatus, VerifierKey

#: Default tolerated clock difference between issuer and verifier, in seconds.
DEFAULT_CLOCK_SKEW = 60


@dataclass(frozen=True, slots=True)
class DecodedCode:
    """A structurally valid code whose signature has NOT been checked (for diagnostics only)."""

    kid: bytes
    claims: HealthCodeClaims
    message: cose.Sign1


@dataclass(frozen=True, slots=True)
class VerifiedCode:
    """A code whose signature, key, times and revocation status have been checked."""

    claims: HealthCodeClaims
    key: VerifierKey

    @property
    def kid(self) -> bytes:
        """The kid of the key that verified the code."""
        return self.key.kid


def decode_code(
    code: str | bytes,
    *,
    max_length: int = envelope.MAX_CODE_LENGTH,
    max_inflated: int = envelope.MAX_INFLATED_BYTES,
) -> DecodedCode:
    """Decode a code without verifying it; raise :class:`CodeRejected` if it is malformed."""
    message = cose.parse_sign1(
        envelope.unwrap(code, max_length=max_length, max_inflated=max_inflated)
    )
    claims = HealthCodeClaims.from_cbor_map(cbor_loads_strict(message.payload, "CWT claims"))
    return DecodedCode(message.kid, claims, message)


class CodeVerifier:
    """Verifies codes offline against a :class:`KeyRing` and a revocation set.

    Thread-safe. ``keys`` and ``revoked`` may be replaced at any time by assignment (a new trust
    list or revocation list); ``revoked`` is any container of ``cti`` byte strings.
    """

    def __init__(
        self,
        keys: KeyRing,
        *,
        revoked: Container[bytes] = frozenset(),
        clock_skew: int = DEFAULT_CLOCK_SKEW,
        max_length: int = envelope.MAX_CODE_LENGTH,
        max_inflated: int = envelope.MAX_INFLATED_BYTES,
    ) -> None:
        if clock_skew < 0:
            raise ValueError("clock_skew must not be negative")
        self.keys = keys
        self.revoked = revoked
        self.clock_skew = clock_skew
        self.max_length = max_length
        self.max_inflated = max_inflated

    def verify(
        self,
        code: str | bytes,
        *,
        now: float | None = None,
        revoked: Container[bytes] | None = None,
    ) -> VerifiedCode:
        """Verify one code at ``now`` (Unix seconds, default the clock).

        ``revoked`` overrides the verifier's revocation set for this call. Returns the verified
        claims and key; raises a :class:`CodeRejected` subclass otherwise.
        """
        message = cose.parse_sign1(
            envelope.unwrap(code, max_length=self.max_length, max_inflated=self.max_inflated)
        )
        claims = HealthCodeClaims.from_cbor_map(cbor_loads_strict(message.payload, "CWT claims"))
        skew = self.clock_skew
        key = self._find_key(message, claims, skew)
        if now is None:
            now = time.time()
        if now >= claims.expires_at + skew:
            raise CodeExpired("the code has expired")
        if claims.issued_at > now + skew:
            raise CodeNotYetValid("the code is issued in the future")
        if claims.code_id in (self.revoked if revoked is None else revoked):
            raise CodeRevoked("the code has been revoked")
        return VerifiedCode(claims, key)

    def verify_many(
        self,
        codes: Iterable[str | bytes],
        *,
        now: float | None = None,
        revoked: Container[bytes] | None = None,
    ) -> list[VerifiedCode | CodeRejected]:
        """Verify a batch at one instant; each result is the verified code or its rejection."""
        if now is None:
            now = time.time()
        results: list[VerifiedCode | CodeRejected] = []
        for code in codes:
            try:
                results.append(self.verify(code, now=now, revoked=revoked))
            except CodeRejected as rejected:
                results.append(rejected)
        return results

    def _find_key(self, message: cose.Sign1, claims: HealthCodeClaims, skew: int) -> VerifierKey:
        candidates = [k for k in self.keys.get(message.kid) if k.issuer == claims.issuer]
        if not candidates:
            raise UnknownKid("no trusted key of the code's issuer has this kid")
        if len(message.signature) != cose.SIGNATURE_LENGTH:
            raise BadSignature("an ES256 signature is 64 bytes")
        failure: CodeRejected = BadSignature("no key with this kid verifies the signature")
        for key in candidates:
            if not cose.verify_signature(
                key.public_key, message.protected, message.payload, message.signature
            ):
                continue
            if key.status is KeyStatus.REVOKED:
                failure = CodeRevoked("the signing key has been revoked")
            elif not key.covers(claims.issued_at, skew):
                failure = UnknownKid("the code was issued outside the key's signing window")
            else:
                return key
        raise failure


def verify_code(
    code: str | bytes,
    keys: KeyRing,
    *,
    now: float | None = None,
    revoked: Container[bytes] = frozenset(),
    clock_skew: int = DEFAULT_CLOCK_SKEW,
) -> VerifiedCode:
    """One-shot :meth:`CodeVerifier.verify`; build a :class:`CodeVerifier` for repeated use."""
    return CodeVerifier(keys, revoked=revoked, clock_skew=clock_skew).verify(code, now=now)
