"""The two CBOR helpers the hot paths need beyond cbor2: a head encoder and a strict decoder."""

from __future__ import annotations

import io
from typing import Any

import cbor2

from healthcode.codes.errors import BadCose


def cbor_head(major: int, value: int) -> bytes:
    """The CBOR initial byte(s) of major type ``major`` with argument ``value`` (RFC 8949 §3)."""
    if value < 24:
        return bytes((major << 5 | value,))
    if value < 0x100:
        return bytes((major << 5 | 24, value))
    if value < 0x10000:
        return bytes((major << 5 | 25,)) + value.to_bytes(2, "big")
    if value < 0x100000000:
        return bytes((major << 5 | 26,)) + value.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + value.to_bytes(8, "big")


def cbor_loads_strict(data: bytes, what: str) -> Any:
    """Decode exactly one CBOR item filling ``data``; raise :class:`BadCose` otherwise."""
    stream = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    # Untrusted input: cbor2's semantic-tag decoders raise many exception types
    # (ValueError, ArithmeticError, OverflowError, TypeError, RecursionError, ...).
    except Exception:
        raise BadCose(f"{what} is not valid CBOR") from None
    if stream.tell() != len(data):
        raise BadCose(f"{what} has bytes after the CBOR item")
    return item
