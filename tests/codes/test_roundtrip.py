"""Issue -> verify round trips, claim encoding, kid derivation and key serialisation."""

from __future__ import annotations

import hashlib
import os

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from healthcode.codes import (
    MAX_CODE_LENGTH,
    PRINTED_TTL,
    CodeIssuer,
    CodeKind,
    CodeVerifier,
    Colour,
    HealthCodeClaims,
    IssuerKey,
    KeyRing,
    KeyStatus,
    VerifierKey,
    decode_code,
    encode_code,
    is_qr_alphanumeric,
    kid_for,
    verify_code,
)
from tests.codes.conftest import ISSUER, MASKED_ID, NAME, NOW


@pytest.mark.parametrize("colour", list(Colour))
@pytest.mark.parametrize("kind", list(CodeKind))
def test_round_trip(
    issuer: CodeIssuer, verifier: CodeVerifier, colour: Colour, kind: CodeKind
) -> None:
    issued = issuer.issue(colour=colour, kind=kind, masked_name=NAME, masked_id=MASKED_ID, now=NOW)
    assert issued.code.startswith("JKM1:")
    assert is_qr_alphanumeric(issued.code)
    assert len(issued.code) < 300
    verified = verifier.verify(issued.code, now=NOW + 1)
    assert verified.claims == issued.claims
    assert verified.claims.colour is colour
    assert verified.claims.kind is kind
    assert verified.claims.masked_name == NAME
    assert verified.claims.issuer == ISSUER
    assert len(verified.claims.code_id) == 16
    assert verified.kid == issuer.key.kid
    expected_ttl = 300 if kind is CodeKind.DYNAMIC else PRINTED_TTL
    assert verified.claims.expires_at - verified.claims.issued_at == expected_ttl


def test_codes_are_unlinkable(issuer: CodeIssuer) -> None:
    first = issuer.issue(colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=NOW)
    second = issuer.issue(colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=NOW)
    assert first.claims.code_id != second.claims.code_id
    assert first.code != second.code


def test_verify_code_one_shot_and_decode(issuer: CodeIssuer, issuer_key: IssuerKey) -> None:
    issued = issuer.issue(colour=Colour.RED, masked_name=NAME, masked_id=MASKED_ID, now=NOW)
    assert verify_code(issued.code, KeyRing([issuer_key]), now=NOW).claims.colour is Colour.RED
    decoded = decode_code(issued.code)
    assert decoded.kid == issuer_key.kid
    assert decoded.claims == issued.claims


def test_verify_many(issuer: CodeIssuer, verifier: CodeVerifier) -> None:
    good = issuer.issue(colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=NOW)
    results = verifier.verify_many([good.code, "nonsense", good.code.encode()], now=NOW)
    assert [getattr(r, "reason", "OK") for r in results] == ["OK", "CODE_BAD_PREFIX", "OK"]


@given(
    issuer=st.text(min_size=1, max_size=64),
    iat=st.integers(0, 2**53 - 1 - PRINTED_TTL),
    ttl=st.integers(0, PRINTED_TTL),
    cti=st.binary(min_size=1, max_size=64),
    colour=st.sampled_from(Colour),
    kind=st.sampled_from(CodeKind),
    name=st.text(max_size=64),
    masked_id=st.text(max_size=63).map(lambda s: s + "*"),
)
def test_hand_encoded_claims_equal_cbor2(
    issuer: str,
    iat: int,
    ttl: int,
    cti: bytes,
    colour: Colour,
    kind: CodeKind,
    name: str,
    masked_id: str,
) -> None:
    claims = HealthCodeClaims(issuer, iat, iat + ttl, cti, colour, kind, name, masked_id)
    claims.validate()
    encoded = claims.to_cbor()
    assert encoded == cbor2.dumps(claims.to_cbor_map())
    assert HealthCodeClaims.from_cbor_map(cbor2.loads(encoded)) == claims


def test_kid_is_sha256_of_spki_prefix(issuer_key: IssuerKey) -> None:
    spki = issuer_key.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert issuer_key.kid == hashlib.sha256(spki).digest()[:8]
    assert kid_for(issuer_key.private_key.public_key()) == issuer_key.kid
    assert issuer_key.public.kid == issuer_key.kid
    assert issuer_key.public.spki_der == spki


def test_private_key_serialisation_with_and_without_password(issuer_key: IssuerKey) -> None:
    window = {"issuer": ISSUER, "not_before": NOW, "not_after": NOW + 1}
    plain = issuer_key.private_pem()
    assert b"ENCRYPTED" not in plain
    assert IssuerKey.from_pem(plain, **window).kid == issuer_key.kid
    encrypted = issuer_key.private_pem(b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in encrypted
    assert IssuerKey.from_pem(encrypted, password=b"correct horse", **window).kid == issuer_key.kid
    with pytest.raises(ValueError, match=r"(?i)password|decrypt|bad"):
        IssuerKey.from_pem(encrypted, password=b"wrong", **window)
    der = issuer_key.private_der(b"pw")
    assert IssuerKey.from_der(der, password=b"pw", **window).kid == issuer_key.kid
    public = VerifierKey.from_pem(issuer_key.public.public_pem(), **window)
    assert public.kid == issuer_key.kid
    assert VerifierKey.from_spki_der(issuer_key.public.spki_der, **window).kid == issuer_key.kid


def test_only_p256_keys() -> None:
    with pytest.raises(ValueError, match="P-256"):
        IssuerKey(ec.generate_private_key(ec.SECP384R1()), ISSUER, 0, 1)
    with pytest.raises(ValueError, match="not_after"):
        IssuerKey.generate(ISSUER, not_before=2, not_after=1)


def test_issuer_refuses_bad_requests(issuer_key: IssuerKey) -> None:
    issuer = CodeIssuer(issuer_key)
    with pytest.raises(ValueError, match="masked"):
        issuer.issue(colour=Colour.GREEN, masked_name=NAME, masked_id="510402199001011234", now=NOW)
    with pytest.raises(ValueError, match="ttl"):
        issuer.issue(colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=NOW, ttl=301)
    with pytest.raises(ValueError, match="not active"):
        issuer.issue(
            colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=issuer_key.not_after + 1
        )
    issuer.key = issuer_key.with_status(KeyStatus.RETIRED)
    with pytest.raises(ValueError, match="not active"):
        issuer.issue(colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=NOW)
    other = IssuerKey.generate("CN-510000", not_before=0, not_after=2 * NOW)
    claims = HealthCodeClaims(
        ISSUER, NOW, NOW + 1, os.urandom(16), Colour.GREEN, CodeKind.DYNAMIC, NAME, MASKED_ID
    )
    with pytest.raises(ValueError, match="issuer"):
        encode_code(other, claims)


def test_longest_claims_still_fit_the_caps(issuer_key: IssuerKey) -> None:
    claims = HealthCodeClaims(
        ISSUER, NOW, NOW + 1, os.urandom(64), Colour.GREEN, CodeKind.PRINTED, "名" * 64, "*" * 64
    )
    code = encode_code(issuer_key, claims)
    assert len(code) < MAX_CODE_LENGTH
    assert CodeVerifier(KeyRing([issuer_key])).verify(code, now=NOW).claims == claims
