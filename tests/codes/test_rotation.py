"""Key rotation: the old key keeps verifying its codes until they expire."""

from __future__ import annotations

import pytest

from healthcode.codes import (
    MAX_CODE_LIFETIME,
    CodeIssuer,
    CodeKind,
    CodeRevoked,
    CodeVerifier,
    Colour,
    IssuerKey,
    KeyRing,
    KeyStatus,
    UnknownKid,
)
from tests.codes.conftest import DAY, ISSUER, MASKED_ID, NAME, NOW


def test_rotation_old_codes_verify_until_expiry() -> None:
    old = IssuerKey.generate(ISSUER, not_before=NOW - 90 * DAY, not_after=NOW)
    new = IssuerKey.generate(ISSUER, not_before=NOW, not_after=NOW + 90 * DAY)
    printed = CodeIssuer(old).issue(
        colour=Colour.GREEN,
        kind=CodeKind.PRINTED,
        masked_name=NAME,
        masked_id=MASKED_ID,
        now=NOW - 10,
    )
    dynamic_old = CodeIssuer(old).issue(
        colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=NOW - 10
    )
    issuer = CodeIssuer(old)
    issuer.key = new  # rotation
    dynamic_new = issuer.issue(
        colour=Colour.YELLOW, masked_name=NAME, masked_id=MASKED_ID, now=NOW + 10
    )
    assert dynamic_new.claims.issued_at == NOW + 10
    ring = KeyRing([old.with_status(KeyStatus.RETIRED), new])
    verifier = CodeVerifier(ring)
    assert verifier.verify(dynamic_old.code, now=NOW + 100).key.kid == old.kid
    assert verifier.verify(dynamic_new.code, now=NOW + 100).key.kid == new.kid
    # The printed code signed by the retired key still verifies six days later.
    assert verifier.verify(printed.code, now=NOW + 6 * DAY).key.status is KeyStatus.RETIRED
    # Once every code of the old key has expired, the ring can drop it.
    pruned = ring.prune(NOW + MAX_CODE_LIFETIME + 1, MAX_CODE_LIFETIME)
    assert list(pruned) == [new.public]
    assert old.kid not in pruned
    with pytest.raises(UnknownKid):
        CodeVerifier(pruned).verify(printed.code, now=NOW)


def test_retired_key_cannot_vouch_for_codes_dated_after_its_window() -> None:
    old = IssuerKey.generate(ISSUER, not_before=NOW - DAY, not_after=NOW + 10 * DAY)
    late = CodeIssuer(old).issue(
        colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=NOW + 5 * DAY
    )
    shortened = IssuerKey(old.private_key, ISSUER, NOW - DAY, NOW, KeyStatus.RETIRED)
    with pytest.raises(UnknownKid, match="window"):
        CodeVerifier(KeyRing([shortened])).verify(late.code, now=NOW + 5 * DAY)


def test_revoked_key_verifies_nothing() -> None:
    key = IssuerKey.generate(ISSUER, not_before=NOW - DAY, not_after=NOW + DAY)
    code = (
        CodeIssuer(key)
        .issue(colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=NOW)
        .code
    )
    verifier = CodeVerifier(KeyRing([key.public.with_status(KeyStatus.REVOKED)]))
    with pytest.raises(CodeRevoked, match="key"):
        verifier.verify(code, now=NOW)


def test_every_key_with_the_kid_is_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    first = IssuerKey.generate(ISSUER, not_before=NOW - DAY, not_after=NOW + DAY)
    second = IssuerKey.generate(ISSUER, not_before=NOW - DAY, not_after=NOW + DAY)
    # Simulate a kid collision: the second key announces itself under the first one's kid.
    object.__setattr__(second.public, "kid", first.kid)
    object.__setattr__(second, "kid", first.kid)
    code = (
        CodeIssuer(second)
        .issue(colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=NOW)
        .code
    )
    ring = KeyRing([first.public, second.public])
    assert len(ring.get(first.kid)) == 2
    assert CodeVerifier(ring).verify(code, now=NOW).key is second.public


def test_key_ring_rejects_duplicates_and_is_immutable() -> None:
    key = IssuerKey.generate(ISSUER, not_before=NOW, not_after=NOW + DAY)
    ring = KeyRing([key])
    with pytest.raises(ValueError, match="twice"):
        ring.with_keys(key)
    smaller = ring.without_kid(key.kid)
    assert len(ring) == 1
    assert len(smaller) == 0
