"""The lane-based base45 codec against the reference package, and the zlib guards."""

from __future__ import annotations

import zlib

import base45
import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthcode.codes import BadBase45, BadPrefix, BadZlib, envelope
from healthcode.codes.envelope import (
    _DIV45_MUL,
    _DIV45_SHIFT,
    BASE45_ALPHABET,
    b45decode,
    b45encode,
    inflate,
    unwrap,
)


def test_div45_magic_is_exact_for_every_16_bit_value() -> None:
    for n in range(1 << 16):
        assert (n * _DIV45_MUL) >> _DIV45_SHIFT == n // 45


def test_every_two_byte_group_matches_the_reference() -> None:
    data = b"".join(n.to_bytes(2, "big") for n in range(1 << 16))
    text = b45encode(data)
    assert text == base45.b45encode(data).decode()
    assert b45decode(text) == data


def test_every_three_character_group_decodes_like_the_reference() -> None:
    alphabet = BASE45_ALPHABET
    valid = []
    for c in alphabet:
        for d in alphabet:
            for e in alphabet:
                group = c + d + e
                value = alphabet.index(c) + 45 * alphabet.index(d) + 2025 * alphabet.index(e)
                if value > 0xFFFF:
                    with pytest.raises(BadBase45):
                        b45decode(group)
                else:
                    valid.append(group)
    text = "".join(valid)
    assert b45decode(text) == base45.b45decode(text)


@given(st.binary(max_size=600))
def test_round_trip_matches_reference(data: bytes) -> None:
    text = b45encode(data)
    assert text == base45.b45encode(data).decode()
    assert b45decode(text) == data


@given(st.text(alphabet=BASE45_ALPHABET + "abc\n\u00e9", max_size=40))
def test_decode_agrees_with_reference_on_validity(text: str) -> None:
    try:
        expected = base45.b45decode(text)
    except ValueError:
        expected = None
    if text.endswith("\n"):  # the reference strips newlines; a code must not contain them
        expected = None
    try:
        got = b45decode(text)
    except BadBase45:
        got = None
    assert got == expected


@pytest.mark.parametrize("text", ["A", "ABCD", "abc", "GGW", "::", "AB\n"])
def test_invalid_base45(text: str) -> None:
    with pytest.raises(BadBase45):
        b45decode(text)


def test_inflate_guards() -> None:
    assert inflate(zlib.compress(b"x" * 4096)) == b"x" * 4096
    with pytest.raises(BadZlib, match="size cap"):
        inflate(zlib.compress(b"\0" * 10_000_000))  # a zlib bomb: ~10 KB that inflates to 10 MB
    with pytest.raises(BadZlib, match="truncated"):
        inflate(zlib.compress(b"hello")[:-3])
    with pytest.raises(BadZlib, match="after the end"):
        inflate(zlib.compress(b"hello") + b"\0")
    with pytest.raises(BadZlib, match="not a valid"):
        inflate(b"not zlib at all")
    with pytest.raises(BadZlib):
        inflate(b"")


def test_unwrap_caps_length_and_checks_prefix() -> None:
    with pytest.raises(BadBase45, match="longer"):
        unwrap("JKM1:" + "0" * envelope.MAX_CODE_LENGTH)
    with pytest.raises(BadPrefix):
        unwrap("HC1:" + b45encode(zlib.compress(b"x")))
    with pytest.raises(BadPrefix):
        unwrap("健康码")
    with pytest.raises(BadBase45):
        unwrap("JKM1:健康码")
    assert unwrap(b"JKM1:" + b45encode(zlib.compress(b"x")).encode()) == b"x"
