"""Codes verify with independent COSE/CWT libraries (pycose, cwt) and by a hand check."""

from __future__ import annotations

import hashlib
import time
import zlib

import base45
import cbor2
import cwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pycose.keys import EC2Key
from pycose.messages import CoseMessage, Sign1Message

from healthcode.codes import CodeIssuer, Colour, IssuerKey
from tests.codes.conftest import MASKED_ID, NAME, NOW


def _cose_bytes(code: str) -> bytes:
    assert code.startswith("JKM1:")
    return zlib.decompress(base45.b45decode(code[5:]))


def _issue(issuer: CodeIssuer, now: float = NOW) -> str:
    return issuer.issue(colour=Colour.YELLOW, masked_name=NAME, masked_id=MASKED_ID, now=now).code


def test_pycose_verifies(issuer: CodeIssuer, issuer_key: IssuerKey) -> None:
    message = CoseMessage.decode(_cose_bytes(_issue(issuer)))
    assert isinstance(message, Sign1Message)
    message.key = EC2Key.from_pem_public_key(issuer_key.public.public_pem().decode())
    assert message.verify_signature()
    assert message.phdr_encoded  # alg and kid are in the protected bucket
    claims = cbor2.loads(message.payload)
    assert claims[-70001] == 2
    assert claims[1] == issuer_key.issuer


def test_pycose_rejects_a_tampered_code(issuer: CodeIssuer, issuer_key: IssuerKey) -> None:
    raw = bytearray(_cose_bytes(_issue(issuer)))
    raw[-1] ^= 1
    message = CoseMessage.decode(bytes(raw))
    message.key = EC2Key.from_pem_public_key(issuer_key.public.public_pem().decode())
    assert not message.verify_signature()


def test_cwt_package_verifies_and_reads_claims(issuer: CodeIssuer, issuer_key: IssuerKey) -> None:
    # cwt checks exp/iat against the real clock, so issue at the real time.
    issuer_key_now = IssuerKey(issuer_key.private_key, issuer_key.issuer, 0, 2**40)
    code = _issue(CodeIssuer(issuer_key_now), now=time.time())
    key = cwt.COSEKey.from_pem(issuer_key.public.public_pem(), alg="ES256", kid=issuer_key.kid)
    claims = cwt.decode(_cose_bytes(code), keys=[key])
    assert claims[1] == issuer_key.issuer
    assert claims[-70003] == NAME
    payload = cwt.COSE.new(verify_kid=True).decode(_cose_bytes(code), keys=[key])
    assert cbor2.loads(payload)[-70004] == MASKED_ID


def test_hand_check(issuer: CodeIssuer, issuer_key: IssuerKey) -> None:
    """Every byte the contract fixes, checked with cbor2 and cryptography only."""
    tagged = cbor2.loads(_cose_bytes(_issue(issuer)))
    assert isinstance(tagged, cbor2.CBORTag)
    assert tagged.tag == 18
    protected, unprotected, payload, signature = tagged.value
    header = cbor2.loads(protected)
    assert header == {1: -7, 4: issuer_key.kid}
    assert unprotected == {}
    assert len(signature) == 64
    spki = issuer_key.public.spki_der
    assert header[4] == hashlib.sha256(spki).digest()[:8]
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload])
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    issuer_key.private_key.public_key().verify(der, sig_structure, ec.ECDSA(hashes.SHA256()))
    claims = cbor2.loads(payload)
    assert set(claims) == {1, 4, 6, 7, -70001, -70002, -70003, -70004}
    assert claims[4] - claims[6] == 300
    assert len(claims[7]) == 16
