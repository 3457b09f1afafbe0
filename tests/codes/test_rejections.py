"""Each rejection class, produced from a crafted input."""

from __future__ import annotations

import os
import zlib
from typing import Any

import base45
import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from healthcode.codes import (
    BadBase45,
    BadCose,
    BadPrefix,
    BadSignature,
    BadZlib,
    CodeExpired,
    CodeIssuer,
    CodeKind,
    CodeNotYetValid,
    CodeRejected,
    CodeRevoked,
    CodeVerifier,
    Colour,
    IssuerKey,
    KeyRing,
    Rejection,
    UnknownKid,
    UnsupportedAlgorithm,
)
from healthcode.codes.cose import der_to_raw, sig_structure
from tests.codes.conftest import ISSUER, MASKED_ID, NAME, NOW


def claims_map(**overrides: Any) -> dict[int, Any]:
    claims: dict[int, Any] = {
        1: ISSUER,
        6: NOW,
        4: NOW + 300,
        7: os.urandom(16),
        -70001: 1,
        -70002: 1,
        -70003: NAME,
        -70004: MASKED_ID,
    }
    for label, value in overrides.items():
        key = {
            "iss": 1,
            "iat": 6,
            "exp": 4,
            "cti": 7,
            "colour": -70001,
            "kind": -70002,
            "name": -70003,
            "id": -70004,
        }[label]
        if value is None:
            del claims[key]
        else:
            claims[key] = value
    return claims


def craft(
    key: IssuerKey,
    *,
    header: dict[int, Any] | None = None,
    payload: Any = None,
    tag: int = 18,
    unprotected: Any = None,
    raw_payload: bytes | None = None,
    signature: bytes | None = None,
) -> bytes:
    """A COSE_Sign1 message with any field replaced; signed correctly unless told otherwise."""
    protected = cbor2.dumps({1: -7, 4: key.kid} if header is None else header)
    body = (
        raw_payload
        if raw_payload is not None
        else cbor2.dumps(claims_map() if payload is None else payload)
    )
    if signature is None:
        der = key.private_key.sign(sig_structure(protected, body), ec.ECDSA(hashes.SHA256()))
        signature = der_to_raw(der)
    return cbor2.dumps(
        cbor2.CBORTag(tag, [protected, {} if unprotected is None else unprotected, body, signature])
    )


def wrap(message: bytes) -> str:
    return "JKM1:" + base45.b45encode(zlib.compress(message)).decode()


def rejected(verifier: CodeVerifier, code: str | bytes, **kwargs: Any) -> CodeRejected:
    with pytest.raises(CodeRejected) as info:
        verifier.verify(code, now=kwargs.pop("now", NOW), **kwargs)
    return info.value


def test_valid_crafted_code_passes(issuer_key: IssuerKey, verifier: CodeVerifier) -> None:
    assert verifier.verify(wrap(craft(issuer_key)), now=NOW).claims.issuer == ISSUER


@pytest.mark.parametrize(
    "code", ["", "JKM1", "jkm1:ABC", "HC1:6BFOXN", "JKM2:ABC", " JKM1:AB", "健康码", b"\xff\xfe"]
)
def test_bad_prefix(verifier: CodeVerifier, code: str | bytes) -> None:
    error = rejected(verifier, code)
    assert isinstance(error, BadPrefix)
    assert error.reason == "CODE_BAD_PREFIX"
    assert error.rejection is Rejection.BAD_PREFIX


@pytest.mark.parametrize("tail", ["abc", "A", "ABCD", "GGW", "AB\n", "AB C=", "中文"])
def test_bad_base45(verifier: CodeVerifier, tail: str) -> None:
    assert isinstance(rejected(verifier, "JKM1:" + tail), BadBase45)


def test_bad_zlib(issuer_key: IssuerKey, verifier: CodeVerifier) -> None:
    message = craft(issuer_key)
    for payload in (
        message,
        zlib.compress(message)[:-4],
        zlib.compress(message) + b"x",
        zlib.compress(b"\0" * 100_000),
        b"",
    ):
        code = "JKM1:" + base45.b45encode(payload).decode()
        assert isinstance(rejected(verifier, code), BadZlib)


@pytest.mark.parametrize(
    "message",
    [
        b"\xff",
        b"\x18",
        b"\xd2\x84",
        cbor2.dumps([1, 2, 3, 4]),
        cbor2.dumps({"a": 1}),
        cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b""])),
        cbor2.dumps(cbor2.CBORTag(18, ["text", {}, b"", b""])),
        cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", [], b"", b""])),
        cbor2.dumps(cbor2.CBORTag(18, [b"\xff", {}, b"", b""])),
        cbor2.dumps(cbor2.CBORTag(18, [b"\x80", {}, b"", b""])),
        cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", {}, b"", b""])),  # no alg
        cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7}), {}, b"", b""])),  # no kid
        cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7, 4: "text"}), {}, b"", b""])),
        cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", {}, None, b""])),  # detached payload
    ],
)
def test_bad_cose_structure(verifier: CodeVerifier, message: bytes) -> None:
    assert isinstance(rejected(verifier, wrap(message)), BadCose)


def test_bad_cose_wrong_tag_and_trailing_bytes(
    issuer_key: IssuerKey, verifier: CodeVerifier
) -> None:
    for tag in (17, 98, 61):
        assert isinstance(rejected(verifier, wrap(craft(issuer_key, tag=tag))), BadCose)
    untagged = cbor2.loads(craft(issuer_key)).value
    assert isinstance(rejected(verifier, wrap(cbor2.dumps(untagged))), BadCose)
    assert isinstance(rejected(verifier, wrap(craft(issuer_key) + b"\x00")), BadCose)
    crit = {1: -7, 4: issuer_key.kid, 2: [99]}
    assert isinstance(rejected(verifier, wrap(craft(issuer_key, header=crit))), BadCose)
    kid_unprotected = craft(issuer_key, unprotected={4: issuer_key.kid})
    assert isinstance(rejected(verifier, wrap(kid_unprotected)), BadCose)


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": None},
        {"iss": ""},
        {"iss": 510400},
        {"iss": "x" * 65},
        {"iat": None},
        {"iat": "1700000000"},
        {"iat": 1.7e9},
        {"iat": -1},
        {"iat": True},
        {"exp": None},
        {"exp": NOW - 1},
        {"exp": 2**64},
        {"cti": None},
        {"cti": b""},
        {"cti": "abc"},
        {"cti": b"x" * 65},
        {"colour": None},
        {"colour": 0},
        {"colour": 4},
        {"colour": "GREEN"},
        {"colour": True},
        {"kind": None},
        {"kind": 3},
        {"name": None},
        {"name": b"\xe5"},
        {"id": None},
        {"id": 5},
    ],
)
def test_bad_cose_claims(
    issuer_key: IssuerKey, verifier: CodeVerifier, overrides: dict[str, Any]
) -> None:
    code = wrap(craft(issuer_key, payload=claims_map(**overrides)))
    assert isinstance(rejected(verifier, code), BadCose)


def test_bad_cose_payload_not_a_map(issuer_key: IssuerKey, verifier: CodeVerifier) -> None:
    for raw in (cbor2.dumps([1, 2]), b"\xff", b"", cbor2.dumps(claims_map()) + b"\x00"):
        assert isinstance(rejected(verifier, wrap(craft(issuer_key, raw_payload=raw))), BadCose)


@pytest.mark.parametrize("alg", [-35, -8, -36, -257, 1, "ES256", None])
def test_unsupported_alg(issuer_key: IssuerKey, verifier: CodeVerifier, alg: Any) -> None:
    header = {1: alg, 4: issuer_key.kid}
    error = rejected(verifier, wrap(craft(issuer_key, header=header)))
    if alg is None:
        assert isinstance(error, BadCose)
    else:
        assert isinstance(error, UnsupportedAlgorithm)
        assert error.reason == "CODE_UNSUPPORTED_ALG"


def test_unknown_kid(issuer_key: IssuerKey, verifier: CodeVerifier) -> None:
    stranger = IssuerKey.generate(ISSUER, not_before=0, not_after=2 * NOW)
    error = rejected(verifier, wrap(craft(stranger)))
    assert isinstance(error, UnknownKid)
    assert error.reason == "CODE_UNKNOWN_KID"
    # A known kid, but the code claims another issuer than the key's.
    other_issuer = wrap(craft(issuer_key, payload=claims_map(iss="CN-110000")))
    assert isinstance(rejected(verifier, other_issuer), UnknownKid)


def test_bad_signature(issuer: CodeIssuer, issuer_key: IssuerKey, verifier: CodeVerifier) -> None:
    message = bytearray(craft(issuer_key))
    message[-7] ^= 0x10  # one bit of the signature
    assert isinstance(rejected(verifier, wrap(bytes(message))), BadSignature)
    for signature in (b"\0" * 64, b"\xff" * 64, os.urandom(63), b""):
        code = wrap(craft(issuer_key, signature=signature))
        assert isinstance(rejected(verifier, code), BadSignature)
    # The signature of another key with the same kid header.
    stranger = IssuerKey.generate(ISSUER, not_before=0, not_after=2 * NOW)
    protected = cbor2.dumps({1: -7, 4: issuer_key.kid})
    payload = cbor2.dumps(claims_map())
    forged = der_to_raw(
        stranger.private_key.sign(sig_structure(protected, payload), ec.ECDSA(hashes.SHA256()))
    )
    code = wrap(cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, forged])))
    assert isinstance(rejected(verifier, code), BadSignature)
    # A payload changed after signing.
    good = craft(issuer_key)
    parts = cbor2.loads(good).value
    parts[2] = cbor2.dumps(claims_map(colour=1))
    assert isinstance(rejected(verifier, wrap(cbor2.dumps(cbor2.CBORTag(18, parts)))), BadSignature)


def test_expired_with_skew(issuer: CodeIssuer, verifier: CodeVerifier) -> None:
    issued = issuer.issue(colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=NOW)
    exp = issued.claims.expires_at
    verifier.verify(issued.code, now=exp + 59)  # inside the default 60 s skew
    error = rejected(verifier, issued.code, now=exp + 60)
    assert isinstance(error, CodeExpired)
    assert error.reason == "CODE_EXPIRED"
    strict = CodeVerifier(verifier.keys, clock_skew=0)
    assert isinstance(rejected(strict, issued.code, now=exp), CodeExpired)


def test_not_yet_valid_beyond_skew(issuer: CodeIssuer, verifier: CodeVerifier) -> None:
    issued = issuer.issue(
        colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, kind=CodeKind.PRINTED, now=NOW
    )
    verifier.verify(issued.code, now=NOW - 60)
    error = rejected(verifier, issued.code, now=NOW - 61)
    assert isinstance(error, CodeNotYetValid)
    assert error.reason == "CODE_NOT_YET_VALID"
    lenient = CodeVerifier(verifier.keys, clock_skew=300)
    lenient.verify(issued.code, now=NOW - 300)


def test_revoked_cti(issuer: CodeIssuer, issuer_key: IssuerKey) -> None:
    issued = issuer.issue(colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=NOW)
    verifier = CodeVerifier(KeyRing([issuer_key]), revoked={issued.claims.code_id})
    error = rejected(verifier, issued.code)
    assert isinstance(error, CodeRevoked)
    assert error.reason == "CODE_REVOKED"
    assert verifier.verify(issued.code, now=NOW, revoked=frozenset()).claims == issued.claims
    open_verifier = CodeVerifier(KeyRing([issuer_key]))
    override = rejected(open_verifier, issued.code, revoked=[issued.claims.code_id])
    assert isinstance(override, CodeRevoked)


def test_messages_carry_no_claim_values(issuer_key: IssuerKey, verifier: CodeVerifier) -> None:
    code = wrap(craft(issuer_key, payload=claims_map(colour=9)))
    error = rejected(verifier, code)
    assert NAME not in str(error)
    assert MASKED_ID not in str(error)
    assert str(error).startswith("CODE_BAD_COSE: ")
