"""COSE_Sign1 (RFC 9052) with ES256 (RFC 9053), on cbor2 and cryptography directly.

Only what the code format needs: a CBOR-tagged (18) ``[protected, unprotected, payload,
signature]`` with ``alg`` and ``kid`` in the protected header, an attached payload, empty external
AAD, and the raw 64-byte ``r || s`` signature. pycose would do the same at several times the cost
per message; the tests check that pycose and the ``cwt`` package verify what this module signs.

Parsing is strict: any deviation raises :class:`BadCose` (or :class:`UnsupportedAlgorithm` for an
``alg`` other than ES256). cbor2 decodes semantic tags (dates, decimals, regexes, ...) on its own
and each can fail with its own exception type, so the decode boundary turns *every* exception into
:class:`BadCose`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from healthcode.codes.cbor import cbor_head, cbor_loads_strict
from healthcode.codes.errors import BadCose, UnsupportedAlgorithm
from healthcode.codes.keys import ALG_ES256, IssuerKey

COSE_SIGN1_TAG = 18
HEADER_ALG = 1
HEADER_CRIT = 2
HEADER_CONTENT_TYPE = 3
HEADER_KID = 4
SIGNATURE_LENGTH = 64

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
# CBOR of the text "Signature1" and of an empty byte string (external_aad), RFC 9052 §4.4.
_SIG1_CONTEXT = b"\x84\x6aSignature1"
_EMPTY_BSTR = b"\x40"


# Tag 18, array of 4; an empty map (unprotected header); a 64-byte byte string head.
_SIGN1_HEAD = b"\xd2\x84"
_EMPTY_MAP = b"\xa0"
_SIG64_HEAD = b"\x58\x40"
# cbor2.dumps({1: -7, 4: <8-byte kid>}): the protected header this platform writes.
_OUR_PROTECTED_HEAD = b"\xa2\x01\x26\x04\x48"
_OUR_PROTECTED_LEN = len(_OUR_PROTECTED_HEAD) + 8
# A whole message as this platform writes it, up to the payload: tag 18, array(4), bstr(13)
# protected header, empty unprotected map, then a one-byte-length payload head (0x58 <len>).
_OUR_MESSAGE_HEAD = b"\xd2\x84\x4d" + _OUR_PROTECTED_HEAD
_OUR_PAYLOAD_AT = len(_OUR_MESSAGE_HEAD) + 8 + 3  # kid, a0, 58 <len>


def _bstr_head(length: int) -> bytes:
    return cbor_head(2, length)


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """``["Signature1", protected, h'', payload]`` in CBOR: the bytes ES256 signs."""
    return b"".join(
        (
            _SIG1_CONTEXT,
            _bstr_head(len(protected)),
            protected,
            _EMPTY_BSTR,
            _bstr_head(len(payload)),
            payload,
        )
    )


def raw_to_der(signature: bytes) -> bytes:
    """RFC 9053 raw ``r || s`` (64 bytes) to the DER form cryptography verifies."""
    return encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )


def der_to_raw(signature: bytes) -> bytes:
    """DER ECDSA signature to RFC 9053 raw ``r || s`` (64 bytes)."""
    r, s = decode_dss_signature(signature)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def encode_protected(kid: bytes, extra: Mapping[int, Any] | None = None) -> bytes:
    """The protected header bytes: ``{1: -7, 4: kid}`` plus any ``extra`` labels."""
    header: dict[int, Any] = {HEADER_ALG: ALG_ES256, HEADER_KID: kid}
    if extra:
        header.update(extra)
    return cbor2.dumps(header)


def sign1(key: IssuerKey, payload: bytes, *, protected: bytes | None = None) -> bytes:
    """A tagged COSE_Sign1 over ``payload`` signed with ``key`` (ES256, raw signature)."""
    if protected is None:
        protected = encode_protected(key.kid)
    signature = der_to_raw(key.private_key.sign(sig_structure(protected, payload), _ECDSA_SHA256))
    # Hand-assembled: cbor2.dumps(CBORTag(18, [protected, {}, payload, signature])), 3x faster.
    return b"".join(
        (
            _SIGN1_HEAD,
            _bstr_head(len(protected)),
            protected,
            _EMPTY_MAP,
            _bstr_head(len(payload)),
            payload,
            _SIG64_HEAD,
            signature,
        )
    )


def verify_signature(
    public_key: ec.EllipticCurvePublicKey, protected: bytes, payload: bytes, signature: bytes
) -> bool:
    """Whether ``signature`` (raw 64 bytes) is a valid ES256 signature of the Sig_structure."""
    try:
        public_key.verify(raw_to_der(signature), sig_structure(protected, payload), _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Sign1:
    """A parsed, not yet verified, COSE_Sign1 message."""

    protected: bytes
    header: dict[Any, Any]
    payload: bytes
    signature: bytes

    @property
    def kid(self) -> bytes:
        """The protected ``kid``."""
        kid: bytes = self.header[HEADER_KID]
        return kid


def _parse_our_layout(message: bytes) -> Sign1 | None:
    """Parse the exact byte layout :func:`sign1` writes without cbor2, or return None.

    The layout is one definite-length CBOR encoding, so whatever matches it is a COSE_Sign1 that the
    general path below would accept with the same fields.
    """
    at = _OUR_PAYLOAD_AT
    if (
        len(message) > at
        and message.startswith(_OUR_MESSAGE_HEAD)
        and message[at - 3] == 0xA0
        and message[at - 2] == 0x58
        and len(message) == at + message[at - 1] + 2 + SIGNATURE_LENGTH
        and message[-SIGNATURE_LENGTH - 2 : -SIGNATURE_LENGTH] == _SIG64_HEAD
        and message[at - 1] >= 24
    ):
        protected = message[3 : 3 + _OUR_PROTECTED_LEN]
        return Sign1(
            protected,
            {HEADER_ALG: ALG_ES256, HEADER_KID: protected[5:]},
            message[at : -SIGNATURE_LENGTH - 2],
            message[-SIGNATURE_LENGTH:],
        )
    return None


def parse_sign1(message: bytes, *, allowed_labels: frozenset[int] = frozenset({1, 4})) -> Sign1:
    """Parse a tagged COSE_Sign1 with ES256 and a protected kid; nothing is verified yet.

    Raises :class:`BadCose` for anything malformed and :class:`UnsupportedAlgorithm` when the
    protected ``alg`` is not ES256. ``allowed_labels`` are the protected header labels accepted.
    """
    fast = _parse_our_layout(message)
    if fast is not None:
        return fast
    item = cbor_loads_strict(message, "COSE message")
    if type(item) is not cbor2.CBORTag or item.tag != COSE_SIGN1_TAG:
        raise BadCose("not a COSE_Sign1 (CBOR tag 18)")
    value = item.value
    if type(value) is not list or len(value) != 4:
        raise BadCose("COSE_Sign1 is not an array of four items")
    protected, unprotected, payload, signature = value
    if type(protected) is not bytes or type(payload) is not bytes or type(signature) is not bytes:
        raise BadCose("COSE_Sign1 protected, payload and signature must be byte strings")
    if type(unprotected) is not dict:
        raise BadCose("COSE_Sign1 unprotected header is not a map")
    if len(protected) == _OUR_PROTECTED_LEN and protected.startswith(_OUR_PROTECTED_HEAD):
        # Fast path for the one header this platform writes: {1: -7, 4: h'<8 bytes>'}.
        header: dict[Any, Any] = {HEADER_ALG: ALG_ES256, HEADER_KID: protected[5:]}
    else:
        header = cbor_loads_strict(protected, "protected header")
        if type(header) is not dict:
            raise BadCose("protected header is not a map")
    alg = header.get(HEADER_ALG)
    if alg is None:
        raise BadCose("protected header has no alg")
    if type(alg) is not int or alg != ALG_ES256:
        raise UnsupportedAlgorithm("only ES256 (-7) is accepted")
    if type(header.get(HEADER_KID)) is not bytes:
        raise BadCose("protected header has no byte-string kid")
    if not header.keys() <= allowed_labels:
        raise BadCose("protected header has labels this format does not define")
    if HEADER_ALG in unprotected or HEADER_KID in unprotected or HEADER_CRIT in unprotected:
        raise BadCose("alg, kid and crit belong in the protected header")
    return Sign1(protected, header, payload, signature)
