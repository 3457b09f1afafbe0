"""Arbitrary input never escapes as anything but CodeRejected (or a successful verification)."""

from __future__ import annotations

import zlib
from typing import Any

import base45
import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthcode.codes import (
    CodeIssuer,
    CodeRejected,
    CodeVerifier,
    Colour,
    IssuerKey,
    KeyRing,
    TrustListRejected,
    verify_revocation_list,
    verify_trust_list,
)
from healthcode.codes.envelope import BASE45_ALPHABET, b45encode
from tests.codes.conftest import DAY, ISSUER, MASKED_ID, NAME, NOW

KEY = IssuerKey.generate(ISSUER, not_before=NOW - DAY, not_after=NOW + DAY)
VERIFIER = CodeVerifier(KeyRing([KEY]), revoked={b"\x00" * 16})
VALID = [
    CodeIssuer(KEY).issue(colour=colour, masked_name=NAME, masked_id=MASKED_ID, now=NOW).code
    for colour in Colour
]
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(code: str | bytes) -> None:
    # Fuzzing: either outcome is fine, any other exception fails the test.
    result = VERIFIER.verify_many([code], now=NOW + 10)[0]
    if isinstance(result, CodeRejected):
        assert result.reason.startswith("CODE_")
        assert str(result).startswith(result.reason)
    else:
        assert result.key.kid == KEY.kid


def envelope(payload: bytes) -> str:
    return "JKM1:" + b45encode(zlib.compress(payload))


cbor_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.binary(max_size=70),
    st.text(max_size=20),
    st.sampled_from([KEY.kid, -7, 18, 1, 4, NOW, NOW + 300]),
)
cbor_value = st.recursive(
    cbor_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.integers(-70005, 10), st.text(max_size=3)), inner, max_size=9),
        st.builds(
            cbor2.CBORTag,
            st.sampled_from([0, 1, 2, 3, 4, 5, 18, 24, 28, 29, 30, 35, 36, 37, 258, 260, 55799]),
            inner,
        ),
    ),
    max_leaves=20,
)


@FUZZ
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    check(text)
    check("JKM1:" + text)


@FUZZ
@given(st.text(alphabet=BASE45_ALPHABET, max_size=400))
def test_random_base45_after_prefix(text: str) -> None:
    check("JKM1:" + text)


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_in_valid_envelope(payload: bytes) -> None:
    check(payload)
    check(envelope(payload))


@FUZZ
@given(cbor_value)
def test_random_cbor_in_valid_envelope(value: Any) -> None:
    try:
        encoded = cbor2.dumps(value)
    except (ValueError, TypeError, OverflowError):
        return
    check(envelope(encoded))
    check(envelope(cbor2.dumps(cbor2.CBORTag(18, [encoded, {}, encoded, b"\0" * 64]))))


@FUZZ
@given(
    header=st.dictionaries(st.sampled_from([1, 2, 3, 4, 5, -1]), cbor_value, max_size=4),
    unprotected=cbor_value,
    claims=st.dictionaries(
        st.sampled_from([1, 4, 6, 7, -70001, -70002, -70003, -70004, 99]), cbor_value, max_size=9
    ),
    signature=st.binary(max_size=70),
)
def test_random_cose_shapes(
    header: dict[int, Any], unprotected: Any, claims: dict[int, Any], signature: bytes
) -> None:
    try:
        message = cbor2.dumps(
            cbor2.CBORTag(18, [cbor2.dumps(header), unprotected, cbor2.dumps(claims), signature])
        )
    except (ValueError, TypeError, OverflowError):
        return
    check(envelope(message))


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_mutations_of_valid_codes(code: str, data: st.DataObject) -> None:
    raw = bytearray(zlib.decompress(base45.b45decode(code[5:])))
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "text"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        check(envelope(bytes(raw)))
    elif kind == "truncate":
        check(envelope(bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])))
    elif kind == "insert":
        at = data.draw(st.integers(0, len(raw)))
        check(
            envelope(
                bytes(raw[:at]) + data.draw(st.binary(min_size=1, max_size=8)) + bytes(raw[at:])
            )
        )
    else:
        at = data.draw(st.integers(0, len(code) - 1))
        replacement = data.draw(st.text(min_size=0, max_size=3))
        check(code[:at] + replacement + code[at + 1 :])


def test_every_single_bit_flip_of_a_code_is_rejected() -> None:
    raw = zlib.decompress(base45.b45decode(VALID[0][5:]))
    for at in range(len(raw)):
        for bit in range(8):
            mutated = bytearray(raw)
            mutated[at] ^= 1 << bit
            try:
                VERIFIER.verify(envelope(bytes(mutated)), now=NOW + 10)
            except CodeRejected:
                continue
            raise AssertionError(f"bit {bit} of byte {at} flipped and the code still verified")


@FUZZ
@given(st.binary(max_size=300))
def test_lists_reject_garbage_with_their_own_error(data: bytes) -> None:
    anchors = KeyRing([KEY])
    for verify in (verify_trust_list, verify_revocation_list):
        try:
            verify(data, anchors)
        except TrustListRejected as rejected:
            reason = rejected.reason
        else:
            reason = "accepted"
        assert reason.startswith("TRUST_LIST_")
