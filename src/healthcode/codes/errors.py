"""Why a health code was rejected.

Every failure to decode or verify a code raises one subclass of :class:`CodeRejected`; nothing else
escapes the decoder, whatever the input. Each subclass carries a stable UPPER_SNAKE ``reason`` (the
``ErrorInfo.reason`` the server puts on the wire) and a :class:`Rejection` member. Messages name the
rule that failed, never a value from the code, so they are safe to log.

Exception hierarchy::

    CodeRejected              (reason, rejection)
     ├── BadPrefix            CODE_BAD_PREFIX        not "JKM1:" + ...
     ├── BadBase45            CODE_BAD_BASE45        not base45, or longer than the input cap
     ├── BadZlib              CODE_BAD_ZLIB          not one zlib stream, or inflates past the cap
     ├── BadCose              CODE_BAD_COSE          bad CBOR, tag != 18, wrong shape, bad claims
     ├── UnsupportedAlgorithm CODE_UNSUPPORTED_ALG   protected alg is not ES256 (-7)
     ├── UnknownKid           CODE_UNKNOWN_KID       no trusted key of the code's issuer and kid
     ├── BadSignature         CODE_BAD_SIGNATURE     no key with that kid verifies the signature
     ├── CodeExpired          CODE_EXPIRED           now >= exp + skew
     ├── CodeNotYetValid      CODE_NOT_YET_VALID     iat > now + skew
     └── CodeRevoked          CODE_REVOKED           cti on the revocation list, or key revoked

    TrustListRejected         (reason)  a signed trust list or revocation list failed to verify
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class Rejection(StrEnum):
    """The stable reason a code was rejected; the value is the wire ``ErrorInfo.reason``."""

    BAD_PREFIX = "CODE_BAD_PREFIX"
    BAD_BASE45 = "CODE_BAD_BASE45"
    BAD_ZLIB = "CODE_BAD_ZLIB"
    BAD_COSE = "CODE_BAD_COSE"
    UNSUPPORTED_ALG = "CODE_UNSUPPORTED_ALG"
    UNKNOWN_KID = "CODE_UNKNOWN_KID"
    BAD_SIGNATURE = "CODE_BAD_SIGNATURE"
    EXPIRED = "CODE_EXPIRED"
    NOT_YET_VALID = "CODE_NOT_YET_VALID"
    REVOKED = "CODE_REVOKED"


class CodeRejected(Exception):
    """A code failed to decode or verify. Catch this one class; read ``reason`` for the cause."""

    rejection: ClassVar[Rejection]

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def reason(self) -> str:
        """Stable UPPER_SNAKE reason, e.g. ``CODE_EXPIRED``."""
        return self.rejection.value

    def __str__(self) -> str:
        return f"{self.rejection.value}: {self.detail}"


class BadPrefix(CodeRejected):
    """The text does not start with the ``JKM1:`` prefix (or is not ASCII there)."""

    rejection = Rejection.BAD_PREFIX


class BadBase45(CodeRejected):
    """The text after the prefix is not valid RFC 9285 base45, or the code is too long."""

    rejection = Rejection.BAD_BASE45


class BadZlib(CodeRejected):
    """The base45 payload is not exactly one zlib stream, or it inflates past the size cap."""

    rejection = Rejection.BAD_ZLIB


class BadCose(CodeRejected):
    """Not a CBOR-tagged (18) COSE_Sign1 carrying a well-formed health-code claims map."""

    rejection = Rejection.BAD_COSE


class UnsupportedAlgorithm(CodeRejected):
    """The protected header names an algorithm other than ES256."""

    rejection = Rejection.UNSUPPORTED_ALG


class UnknownKid(CodeRejected):
    """No trusted key may vouch for this code: unknown kid, other issuer, or outside its window."""

    rejection = Rejection.UNKNOWN_KID


class BadSignature(CodeRejected):
    """No key with the code's kid verifies the signature."""

    rejection = Rejection.BAD_SIGNATURE


class CodeExpired(CodeRejected):
    """The code's ``exp`` lies in the past by more than the allowed clock skew."""

    rejection = Rejection.EXPIRED


class CodeNotYetValid(CodeRejected):
    """The code's ``iat`` lies in the future by more than the allowed clock skew."""

    rejection = Rejection.NOT_YET_VALID


class CodeRevoked(CodeRejected):
    """The code's ``cti`` is on the revocation list, or its signing key has been revoked."""

    rejection = Rejection.REVOKED


class TrustListRejected(Exception):
    """A signed trust list or revocation list did not verify.

    ``reason`` is one of ``TRUST_LIST_MALFORMED``, ``TRUST_LIST_UNKNOWN_KID``,
    ``TRUST_LIST_BAD_SIGNATURE``, ``TRUST_LIST_WRONG_TYPE``, ``TRUST_LIST_ROLLBACK``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
