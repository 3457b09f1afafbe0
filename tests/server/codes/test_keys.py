"""Key store: rotation (old codes verify, new codes use the new kid, a second replica picks the
rotation up), signed trust list (verifies; tamper fails), revocation list, encryption at rest."""

from __future__ import annotations

import pytest
from healthcode_sdk._gen.healthcode.v1 import code_service_pb2 as code_pb
from healthcode_sdk._gen.healthcode.v1 import common_pb2
from healthcode_sdk._gen.healthcode.v1 import verification_service_pb2 as ver_pb
from sqlalchemy import select
from sqlalchemy.orm import Session

from healthcode.codes import (
    KeyRing,
    KeyStatus,
    TrustListRejected,
    VerifierKey,
    decode_code,
    verify_revocation_list,
    verify_trust_list,
)
from healthcode.server.codes import keystore as keystore_module
from healthcode.server.codes.keystore import KeyStore, revoke_person_offline_codes
from healthcode.server.codes.models import IssuerKeyRecord
from healthcode.server.db.base import utcnow
from tests.server.codes.harness import GateStack


def anchors(spki: bytes) -> KeyRing:
    return KeyRing(
        [VerifierKey.from_spki_der(spki, issuer="CN-510400", not_before=0, not_after=2**40)]
    )


async def test_rotation_old_codes_verify_new_codes_use_new_kid(
    stack: GateStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    resident = await stack.resident()
    checkpoint = await stack.checkpoint()
    staff = await stack.staff(checkpoint)
    old = (await stack.codes.IssueCode(code_pb.IssueCodeRequest(), metadata=resident.md)).code
    # A second replica on the same database and secret.
    replica = KeyStore(stack.db, stack.settings, stack.platform.secret)
    before = await replica.snapshot()
    assert before.active_kid.hex() == old.kid

    new_kid, retired_kid = await stack.platform.keys.rotate()
    assert retired_kid == old.kid
    assert new_kid != old.kid
    new = (await stack.codes.IssueCode(code_pb.IssueCodeRequest(), metadata=resident.md)).code
    assert new.kid == new_kid
    for code in (old.code, new.code):
        verified = await stack.verification.VerifyCode(
            ver_pb.VerifyCodeRequest(code=code), metadata=staff.md
        )
        assert verified.color == common_pb2.CODE_COLOR_GREEN

    # The replica picks the rotation up on its next refresh (stale-while-revalidate).
    monkeypatch.setattr(keystore_module, "REFRESH_SECONDS", 0.0)
    await replica.snapshot()  # starts the background reload
    task = replica._refreshing
    if task is not None:
        await task
    after = await replica.snapshot()
    assert after.active_kid.hex() == new_kid
    assert {k.kid.hex() for k in after.keys} == {new_kid, retired_kid}
    assert after.verifier.verify(old.code).kid.hex() == retired_kid

    trust = await stack.verification.GetTrustList(ver_pb.GetTrustListRequest())
    statuses = {k.kid.hex(): k.status for k in trust.keys}
    assert statuses == {new_kid: ver_pb.KEY_STATUS_ACTIVE, retired_kid: ver_pb.KEY_STATUS_RETIRED}
    verified_list = verify_trust_list(trust.signed_trust_list, anchors(trust.signer_spki_der))
    assert {k.kid.hex(): k.status for k in verified_list.keys} == {
        new_kid: KeyStatus.ACTIVE,
        retired_kid: KeyStatus.RETIRED,
    }
    # An offline verifier with the signed list verifies both codes.
    from healthcode.codes import CodeVerifier

    offline = CodeVerifier(verified_list.key_ring())
    assert offline.verify(old.code).kid.hex() == retired_kid
    assert offline.verify(new.code).kid.hex() == new_kid
    assert decode_code(new.code).kid.hex() == new_kid


async def test_trust_list_tamper_fails(stack: GateStack) -> None:
    trust = await stack.verification.GetTrustList(ver_pb.GetTrustListRequest())
    assert len(trust.keys) == 1
    assert trust.keys[0].alg == "ES256"
    assert trust.keys[0].not_after.seconds > trust.keys[0].not_before.seconds
    ring = anchors(trust.signer_spki_der)
    verify_trust_list(trust.signed_trust_list, ring)
    tampered = bytearray(trust.signed_trust_list)
    tampered[len(tampered) // 2] ^= 0x01
    with pytest.raises(TrustListRejected):
        verify_trust_list(bytes(tampered), ring)
    # The wrong anchor (an issuer key, not the list key) is refused too.
    with pytest.raises(TrustListRejected) as err:
        verify_trust_list(trust.signed_trust_list, anchors(trust.keys[0].spki_der))
    assert err.value.reason == "TRUST_LIST_UNKNOWN_KID"


async def test_revocation_list(stack: GateStack) -> None:
    resident = await stack.resident()
    assert resident.person_id is not None
    codes = [
        (
            await stack.codes.IssueOfflineCode(
                code_pb.IssueOfflineCodeRequest(request_id=f"o-{i}", validity_days=1),
                metadata=resident.md,
            )
        ).code.code
        for i in range(2)
    ]
    dynamic = (await stack.codes.IssueCode(code_pb.IssueCodeRequest(), metadata=resident.md)).code
    empty = await stack.verification.GetRevocationList(ver_pb.GetRevocationListRequest())
    assert list(empty.revoked_code_ids) == []
    count, version = await stack.db.run(revoke_person_offline_codes, resident.person_id, utcnow())
    assert count == 2
    assert version == empty.version + 1
    listed = await stack.verification.GetRevocationList(ver_pb.GetRevocationListRequest())
    assert listed.version == version
    ctis = {decode_code(c).claims.code_id for c in codes}
    assert set(listed.revoked_code_ids) == ctis
    trust = await stack.verification.GetTrustList(ver_pb.GetTrustListRequest())
    verified = verify_revocation_list(
        listed.signed_revocation_list, anchors(trust.signer_spki_der), min_version=version
    )
    assert verified.revoked == ctis
    with pytest.raises(TrustListRejected) as err:
        verify_revocation_list(
            listed.signed_revocation_list, anchors(trust.signer_spki_der), min_version=version + 1
        )
    assert err.value.reason == "TRUST_LIST_ROLLBACK"
    # Revoking again changes nothing and keeps the version; the dynamic code is unaffected.
    assert await stack.db.run(revoke_person_offline_codes, resident.person_id, utcnow()) == (
        0,
        version,
    )
    assert decode_code(dynamic.code).claims.code_id not in set(listed.revoked_code_ids)


async def test_private_keys_are_encrypted_at_rest(stack: GateStack) -> None:
    snapshot = await stack.platform.keys.snapshot()
    raw = snapshot.issuer.key.private_der()

    def rows(session: Session) -> list[IssuerKeyRecord]:
        return list(session.scalars(select(IssuerKeyRecord)))

    records = await stack.db.run(rows)
    assert {r.role for r in records} == {"CODE", "LIST"}
    for record in records:
        assert raw not in record.private_key_encrypted
        assert raw[-32:] not in record.private_key_encrypted
    # Another secret cannot open them.
    other = KeyStore(stack.db, stack.settings, b"\x00" * 32)
    with pytest.raises(Exception):  # noqa: B017, PT011 - cryptography's InvalidTag
        await other.snapshot()
