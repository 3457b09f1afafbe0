"""Signed trust lists and revocation lists: sign, verify, tamper detection, rollback."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from healthcode.codes import (
    CodeIssuer,
    CodeRevoked,
    CodeVerifier,
    Colour,
    IssuerKey,
    KeyRing,
    KeyStatus,
    TrustListRejected,
    sign_revocation_list,
    sign_trust_list,
    verify_revocation_list,
    verify_trust_list,
)
from healthcode.codes.cose import der_to_raw, sig_structure
from tests.codes.conftest import DAY, ISSUER, MASKED_ID, NAME, NOW


def reason(data: bytes, anchors: KeyRing, *, revocation: bool = False, min_version: int = 0) -> str:
    verify = verify_revocation_list if revocation else verify_trust_list
    with pytest.raises(TrustListRejected) as info:
        verify(data, anchors, min_version=min_version)
    return info.value.reason


def resign(signer: IssuerKey, data: bytes, payload: bytes) -> bytes:
    protected = cbor2.loads(data).value[0]
    sig = der_to_raw(
        signer.private_key.sign(sig_structure(protected, payload), ec.ECDSA(hashes.SHA256()))
    )
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig]))


def test_trust_list_round_trip_drives_a_verifier(
    issuer_key: IssuerKey, list_key: IssuerKey
) -> None:
    retired = IssuerKey.generate(
        ISSUER, not_before=NOW - 60 * DAY, not_after=NOW - 30 * DAY, status=KeyStatus.RETIRED
    )
    data = sign_trust_list(list_key, [issuer_key, retired.public], version=3, now=NOW)
    anchors = KeyRing([list_key.public])
    trust = verify_trust_list(data, anchors, min_version=3)
    assert (trust.issuer, trust.issued_at, trust.version) == (list_key.issuer, NOW, 3)
    assert [(k.kid, k.status, k.not_before, k.not_after, k.issuer) for k in trust.keys] == [
        (issuer_key.kid, KeyStatus.ACTIVE, issuer_key.not_before, issuer_key.not_after, ISSUER),
        (retired.kid, KeyStatus.RETIRED, retired.not_before, retired.not_after, ISSUER),
    ]
    body = cbor2.loads(cbor2.loads(data).value[2])
    assert body["keys"][0]["spki"] == issuer_key.public.spki_der
    assert body["keys"][0]["alg"] == -7
    code = (
        CodeIssuer(issuer_key)
        .issue(colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=NOW)
        .code
    )
    assert CodeVerifier(trust.key_ring()).verify(code, now=NOW).kid == issuer_key.kid


def test_trust_list_tampering_is_detected(issuer_key: IssuerKey, list_key: IssuerKey) -> None:
    anchors = KeyRing([list_key.public])
    data = sign_trust_list(list_key, [issuer_key], version=1, now=NOW)
    tampered = bytearray(data)
    tampered[-1] ^= 1
    assert reason(bytes(tampered), anchors) == "TRUST_LIST_BAD_SIGNATURE"
    # Swap in an attacker's key, keep the old signature.
    attacker = IssuerKey.generate(ISSUER, not_before=0, not_after=2 * NOW)
    parts = cbor2.loads(data).value
    body = cbor2.loads(parts[2])
    body["keys"][0]["spki"] = attacker.public.spki_der
    body["keys"][0]["kid"] = attacker.kid
    parts[2] = cbor2.dumps(body)
    assert reason(cbor2.dumps(cbor2.CBORTag(18, parts)), anchors) == "TRUST_LIST_BAD_SIGNATURE"
    # Signed by a key that is not an anchor (e.g. a code-signing key).
    forged = sign_trust_list(issuer_key, [attacker], version=9, now=NOW)
    assert reason(forged, anchors) == "TRUST_LIST_UNKNOWN_KID"
    # A revoked anchor verifies nothing.
    revoked_anchor = KeyRing([list_key.public.with_status(KeyStatus.REVOKED)])
    assert reason(data, revoked_anchor) == "TRUST_LIST_UNKNOWN_KID"
    # Rollback to an older version.
    assert reason(data, anchors, min_version=2) == "TRUST_LIST_ROLLBACK"
    # Garbage.
    assert reason(b"\x00\x01", anchors) == "TRUST_LIST_MALFORMED"


def test_trust_list_entries_are_checked_after_signature(
    issuer_key: IssuerKey, list_key: IssuerKey
) -> None:
    anchors = KeyRing([list_key.public])
    data = sign_trust_list(list_key, [issuer_key], version=1, now=NOW)
    body = cbor2.loads(cbor2.loads(data).value[2])
    for field, value in (
        ("kid", b"12345678"),
        ("alg", -35),
        ("spki", b"junk"),
        ("status", "MAYBE"),
        ("not_before", "yesterday"),
    ):
        broken = {**body, "keys": [{**body["keys"][0], field: value}]}
        assert reason(resign(list_key, data, cbor2.dumps(broken)), anchors) == (
            "TRUST_LIST_MALFORMED"
        ), field
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    spki = p384.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    broken = {**body, "keys": [{**body["keys"][0], "spki": spki}]}
    assert reason(resign(list_key, data, cbor2.dumps(broken)), anchors) == "TRUST_LIST_MALFORMED"


def test_revocation_list_round_trip_and_use(issuer_key: IssuerKey, list_key: IssuerKey) -> None:
    anchors = KeyRing([list_key.public])
    issued = CodeIssuer(issuer_key).issue(
        colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=NOW
    )
    data = sign_revocation_list(list_key, [issued.claims.code_id, b"other"], version=7, now=NOW)
    revocations = verify_revocation_list(data, anchors, min_version=7)
    assert revocations.revoked == {issued.claims.code_id, b"other"}
    assert (revocations.version, revocations.issued_at) == (7, NOW)
    verifier = CodeVerifier(KeyRing([issuer_key]), revoked=revocations.revoked)
    with pytest.raises(CodeRevoked):
        verifier.verify(issued.code, now=NOW)
    tampered = bytearray(data)
    tampered[-10] ^= 0x80
    assert reason(bytes(tampered), anchors, revocation=True) == "TRUST_LIST_BAD_SIGNATURE"
    assert reason(data, anchors, revocation=True, min_version=8) == "TRUST_LIST_ROLLBACK"


def test_lists_cannot_stand_in_for_each_other(issuer_key: IssuerKey, list_key: IssuerKey) -> None:
    anchors = KeyRing([list_key.public])
    revocations = sign_revocation_list(list_key, [], version=1, now=NOW)
    trust = sign_trust_list(list_key, [issuer_key], version=1, now=NOW)
    assert reason(revocations, anchors) == "TRUST_LIST_WRONG_TYPE"
    assert reason(trust, anchors, revocation=True) == "TRUST_LIST_WRONG_TYPE"


def test_signer_must_be_active(list_key: IssuerKey, issuer_key: IssuerKey) -> None:
    with pytest.raises(ValueError, match="not active"):
        sign_trust_list(list_key.with_status(KeyStatus.RETIRED), [issuer_key], version=1, now=NOW)
    with pytest.raises(ValueError, match="version"):
        sign_revocation_list(list_key, [], version=-1, now=NOW)
