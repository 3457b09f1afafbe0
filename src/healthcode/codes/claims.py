"""The CWT claims (RFC 8392) a health code carries, DESIGN.md §3.

Standard claims: ``iss`` (1), ``exp`` (4), ``iat`` (6), ``cti`` (7). Private claims: ``-70001``
colour, ``-70002`` kind, ``-70003`` masked holder name, ``-70004`` masked ID. There is no stable
person id: ``cti`` is random per code, so two scans of different codes cannot be linked offline.

Decoding is strict about the claims this format defines (present, right type, known enum value)
and ignores claims it does not know, so a later version can add claims without breaking verifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from healthcode.codes.cbor import cbor_head
from healthcode.codes.errors import BadCose

CLAIM_ISS = 1
CLAIM_EXP = 4
CLAIM_IAT = 6
CLAIM_CTI = 7
CLAIM_COLOUR = -70001
CLAIM_KIND = -70002
CLAIM_MASKED_NAME = -70003
CLAIM_MASKED_ID = -70004

#: Length of the random code id issued by this platform (decoding accepts 1..64 bytes).
CTI_LENGTH = 16
MAX_CTI_LENGTH = 64
#: Longest issuer id / masked text accepted in a code.
MAX_TEXT_LENGTH = 64
#: NumericDate bound: dates are non-negative integers below 2**53.
MAX_TIME = 2**53 - 1


class Colour(IntEnum):
    """Code colour (-70001)."""

    GREEN = 1
    YELLOW = 2
    RED = 3


class CodeKind(IntEnum):
    """Code kind (-70002)."""

    DYNAMIC = 1  #: shown in the app, refreshed every few minutes
    PRINTED = 2  #: printed / offline code for people without phones; shown with the ID card


@dataclass(frozen=True, slots=True)
class HealthCodeClaims:
    """What a health code says. Times are Unix seconds."""

    issuer: str
    issued_at: int
    expires_at: int
    code_id: bytes
    colour: Colour
    kind: CodeKind
    masked_name: str
    masked_id: str

    def to_cbor_map(self) -> dict[int, Any]:
        """The CWT claims map, in a fixed key order so encodings are reproducible."""
        return {
            CLAIM_ISS: self.issuer,
            CLAIM_IAT: self.issued_at,
            CLAIM_EXP: self.expires_at,
            CLAIM_CTI: self.code_id,
            CLAIM_COLOUR: int(self.colour),
            CLAIM_KIND: int(self.kind),
            CLAIM_MASKED_NAME: self.masked_name,
            CLAIM_MASKED_ID: self.masked_id,
        }

    def to_cbor(self) -> bytes:
        """The CBOR encoding of :meth:`to_cbor_map`, byte for byte what ``cbor2.dumps`` gives.

        Assembled by hand because it is on the issuing hot path (about 2x faster than cbor2 for
        this fixed shape); a property test pins it to ``cbor2.dumps(self.to_cbor_map())``.
        """
        return b"".join(
            (
                b"\xa8\x01",
                _cbor_text(self.issuer),
                b"\x06",
                cbor_head(0, self.issued_at),
                b"\x04",
                cbor_head(0, self.expires_at),
                b"\x07",
                cbor_head(2, len(self.code_id)),
                self.code_id,
                _COLOUR_HEAD,
                cbor_head(0, int(self.colour)),
                _KIND_HEAD,
                cbor_head(0, int(self.kind)),
                _NAME_HEAD,
                _cbor_text(self.masked_name),
                _ID_HEAD,
                _cbor_text(self.masked_id),
            )
        )

    @classmethod
    def from_cbor_map(cls, claims: object) -> HealthCodeClaims:
        """Parse a decoded CWT claims map; raise :class:`BadCose` if a claim is missing or wrong."""
        if type(claims) is not dict:
            raise BadCose("CWT claims are not a map")
        get = claims.get
        issued_at = get(CLAIM_IAT)
        expires_at = get(CLAIM_EXP)
        # type() rather than isinstance() throughout: True/False must not pass as 1/0.
        if (
            type(issued_at) is not int
            or type(expires_at) is not int
            or not 0 <= issued_at <= expires_at <= MAX_TIME
        ):
            raise BadCose("claims iat/exp are not integer NumericDates with iat <= exp")
        code_id = get(CLAIM_CTI)
        if type(code_id) is not bytes or not 0 < len(code_id) <= MAX_CTI_LENGTH:
            raise BadCose("claim cti is missing or not a byte string of 1..64 bytes")
        colour = get(CLAIM_COLOUR)
        kind = get(CLAIM_KIND)
        if type(colour) is not int or colour not in _COLOURS:
            raise BadCose("claim colour is missing or not a known value")
        if type(kind) is not int or kind not in _KINDS:
            raise BadCose("claim kind is missing or not a known value")
        issuer = get(CLAIM_ISS)
        if type(issuer) is not str or not 0 < len(issuer) <= MAX_TEXT_LENGTH:
            raise BadCose("claim iss is missing or not text of 1..64 characters")
        masked_name = get(CLAIM_MASKED_NAME)
        masked_id = get(CLAIM_MASKED_ID)
        if (
            type(masked_name) is not str
            or len(masked_name) > MAX_TEXT_LENGTH
            or type(masked_id) is not str
            or len(masked_id) > MAX_TEXT_LENGTH
        ):
            raise BadCose("claims masked name/id are missing or not text of at most 64 characters")
        return cls(
            issuer,
            issued_at,
            expires_at,
            code_id,
            _COLOURS[colour],
            _KINDS[kind],
            masked_name,
            masked_id,
        )

    def validate(self) -> None:
        """Raise ``ValueError`` if these claims could not be decoded back (used before signing)."""
        for name, value in (
            ("issuer", self.issuer),
            ("masked_name", self.masked_name),
            ("masked_id", self.masked_id),
        ):
            if not isinstance(value, str) or len(value) > MAX_TEXT_LENGTH:
                raise ValueError(f"{name} must be text of at most {MAX_TEXT_LENGTH} characters")
        if not self.issuer:
            raise ValueError("issuer must not be empty")
        if self.masked_id and "*" not in self.masked_id:
            raise ValueError("masked_id must be masked (keep the ID number itself out of codes)")
        for name, t in (("issued_at", self.issued_at), ("expires_at", self.expires_at)):
            if type(t) is not int or not 0 <= t <= MAX_TIME:
                raise ValueError(f"{name} must be an integer Unix time")
        if self.expires_at < self.issued_at:
            raise ValueError("expires_at precedes issued_at")
        if not isinstance(self.code_id, bytes) or not 0 < len(self.code_id) <= MAX_CTI_LENGTH:
            raise ValueError("code_id must be 1..64 bytes")
        Colour(self.colour)
        CodeKind(self.kind)


_COLOURS = {int(c): c for c in Colour}
_KINDS = {int(k): k for k in CodeKind}
_COLOUR_HEAD = cbor_head(1, -1 - CLAIM_COLOUR)
_KIND_HEAD = cbor_head(1, -1 - CLAIM_KIND)
_NAME_HEAD = cbor_head(1, -1 - CLAIM_MASKED_NAME)
_ID_HEAD = cbor_head(1, -1 - CLAIM_MASKED_ID)


def _cbor_text(value: str) -> bytes:
    encoded = value.encode("utf-8")
    return cbor_head(3, len(encoded)) + encoded
