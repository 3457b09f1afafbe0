"""Issuing health codes: claims -> CWT -> COSE_Sign1 -> zlib -> base45 -> ``JKM1:...``.

Dynamic codes are on the hot path (the app refreshes them every few minutes), so the protected
header is encoded once per key and the envelope uses the lane-based base45 of
:mod:`healthcode.codes.envelope`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from healthcode.codes import cose, envelope
from healthcode.codes.claims import CTI_LENGTH, CodeKind, Colour, HealthCodeClaims
from healthcode.codes.keys import IssuerKey

#: Default lifetime of a dynamic code (the app refreshes it).
DYNAMIC_TTL = 300
#: Longest lifetime of a dynamic code.
MAX_DYNAMIC_TTL = 3600
#: Default and longest lifetime of a printed offline code.
PRINTED_TTL = 7 * 24 * 3600
#: Longest lifetime of any code; a retired key may leave the trust list this long after not_after.
MAX_CODE_LIFETIME = PRINTED_TTL


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """A freshly issued code: the text to put in the QR code and what it says."""

    code: str
    claims: HealthCodeClaims


def encode_code(key: IssuerKey, claims: HealthCodeClaims, *, protected: bytes | None = None) -> str:
    """Sign ``claims`` with ``key`` and wrap them as ``JKM1:`` text.

    Checks that the claims can be decoded back and that ``claims.issuer`` is the key's issuer;
    it does not check the key's status or window (:class:`CodeIssuer` does).
    """
    claims.validate()
    if claims.issuer != key.issuer:
        raise ValueError("claims.issuer differs from the signing key's issuer")
    payload = claims.to_cbor()
    return envelope.wrap(cose.sign1(key, payload, protected=protected))


class CodeIssuer:
    """Issues codes with one signing key; swap ``key`` on rotation (one assignment)."""

    def __init__(
        self, key: IssuerKey, *, dynamic_ttl: int = DYNAMIC_TTL, printed_ttl: int = PRINTED_TTL
    ) -> None:
        if not 0 < dynamic_ttl <= MAX_DYNAMIC_TTL:
            raise ValueError("dynamic_ttl must be 1..3600 seconds")
        if not 0 < printed_ttl <= PRINTED_TTL:
            raise ValueError("printed_ttl must be at most 7 days")
        self.dynamic_ttl = dynamic_ttl
        self.printed_ttl = printed_ttl
        self.key = key

    @property
    def key(self) -> IssuerKey:
        """The signing key."""
        return self._signing[0]

    @key.setter
    def key(self, key: IssuerKey) -> None:
        # Assigned as a pair so that a concurrent issue() never mixes one key's kid with another.
        self._signing = (key, cose.encode_protected(key.kid))

    def issue(
        self,
        *,
        colour: Colour,
        masked_name: str,
        masked_id: str,
        kind: CodeKind = CodeKind.DYNAMIC,
        now: float | None = None,
        ttl: int | None = None,
    ) -> IssuedCode:
        """Issue a code for someone whose masked name and ID are given (never the plain ones).

        ``now`` (Unix seconds) defaults to the clock; ``ttl`` defaults to the kind's lifetime and
        may not exceed it. Raises ``ValueError`` if the key may not sign now.
        """
        key, protected = self._signing
        issued_at = int(time.time() if now is None else now)
        limit = self.dynamic_ttl if kind is CodeKind.DYNAMIC else self.printed_ttl
        lifetime = limit if ttl is None else ttl
        if not 0 < lifetime <= limit:
            raise ValueError(f"ttl must be 1..{limit} seconds for this kind")
        if not key.can_sign_at(issued_at):
            raise ValueError("the signing key is not active at this time")
        claims = HealthCodeClaims(
            issuer=key.issuer,
            issued_at=issued_at,
            expires_at=issued_at + lifetime,
            code_id=os.urandom(CTI_LENGTH),
            colour=Colour(colour),
            kind=CodeKind(kind),
            masked_name=masked_name,
            masked_id=masked_id,
        )
        return IssuedCode(encode_code(key, claims, protected=protected), claims)
