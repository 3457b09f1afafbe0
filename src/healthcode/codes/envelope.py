"""The text envelope around a signed code: ``JKM1:`` + base45(zlib(COSE_Sign1)).

Base45 (RFC 9285) is done here rather than with the ``base45`` package because it sits on the hot
path of issuing and batch verification: the package's per-character Python loop costs about as much
as a third of an ES256 verification. Both directions below run as a handful of big-integer
operations over "lanes" (one lane per 3-character / 2-byte group), so the per-group work happens in
C. ``tests/codes/test_envelope.py`` checks them against the ``base45`` package, exhaustively for
every 2-byte group and by property for random inputs.

The zlib step is guarded: one stream, nothing after it, and at most :data:`MAX_INFLATED_BYTES`
once inflated (a code is a few hundred bytes; a "zlib bomb" is rejected after inflating only the
cap).
"""

from __future__ import annotations

import zlib

from healthcode.codes.errors import BadBase45, BadPrefix, BadZlib

#: Every code starts with this; it names the format version.
PREFIX = "JKM1:"
#: RFC 9285 alphabet; a subset of the QR alphanumeric set, as is the prefix.
BASE45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
#: Longest code text accepted (prefix included). Real codes are about 260 characters.
MAX_CODE_LENGTH = 2048
#: Largest inflated COSE message accepted (zlib bomb guard).
MAX_INFLATED_BYTES = 4096

_PREFIX_LEN = len(PREFIX)
_PREFIX_BYTES = PREFIX.encode("ascii")
_INVALID = 0xFF
# byte -> base45 value (0..44), 0xFF for anything outside the alphabet.
_DECODE_TABLE = bytes(
    BASE45_ALPHABET.index(chr(i)) if chr(i) in BASE45_ALPHABET else _INVALID for i in range(256)
)
# base45 value (0..44) -> character byte; the rest maps to itself and is never used.
_ENCODE_TABLE = BASE45_ALPHABET.encode("ascii") + bytes(range(45, 256))
# floor(n / 45) == (n * _DIV45_MUL) >> _DIV45_SHIFT for every 0 <= n < 381300 (checked in tests).
_DIV45_MUL = 93207
_DIV45_SHIFT = 22


_MASKS: dict[tuple[bytes, int], int] = {}


def _lane_mask(lane: bytes, count: int) -> int:
    """``lane`` repeated ``count`` times, as a big-endian integer (cached: lengths repeat)."""
    mask = _MASKS.get((lane, count))
    if mask is None:
        mask = int.from_bytes(lane * count, "big")
        if len(_MASKS) < 4096:
            _MASKS[(lane, count)] = mask
    return mask


def b45encode(data: bytes) -> str:
    """Encode bytes as RFC 9285 base45 text."""
    n = len(data)
    pairs = n // 2
    out = bytearray(3 * pairs)
    if pairs:
        # One 40-bit lane per 16-bit group: wide enough that n * _DIV45_MUL (< 2**33) cannot carry.
        width = 5 * pairs
        spread = bytearray(width)
        spread[3::5] = data[0 : 2 * pairs : 2]
        spread[4::5] = data[1 : 2 * pairs : 2]
        lanes = int.from_bytes(spread, "big")
        low11 = _lane_mask(b"\x00\x00\x00\x07\xff", pairs)
        q1 = ((lanes * _DIV45_MUL) >> _DIV45_SHIFT) & low11  # n // 45 per lane
        q2 = ((q1 * _DIV45_MUL) >> _DIV45_SHIFT) & low11  # n // 2025 per lane
        out[0::3] = (lanes - 45 * q1).to_bytes(width, "big")[4::5]
        out[1::3] = (q1 - 45 * q2).to_bytes(width, "big")[4::5]
        out[2::3] = q2.to_bytes(width, "big")[4::5]
    if n % 2:
        out += bytes(divmod(data[-1], 45)[::-1])
    return out.translate(_ENCODE_TABLE).decode("ascii")


def b45decode_bytes(text: bytes) -> bytes:
    """Decode RFC 9285 base45 (given as ASCII bytes); raise :class:`BadBase45` if invalid."""
    values = text.translate(_DECODE_TABLE)
    if _INVALID in values:
        raise BadBase45("character outside the base45 alphabet")
    groups, tail = divmod(len(values), 3)
    if tail == 1:
        raise BadBase45("base45 length leaves a dangling character")
    out = bytearray(2 * groups)
    if groups:
        # One 24-bit lane per 3-character group: c0 + 45*c1 + 2025*c2 <= 91124 < 2**24.
        width = 3 * groups
        lanes = int.from_bytes(values[:width], "big")
        mask = _lane_mask(b"\x00\x00\xff", groups)
        summed = ((lanes >> 16) & mask) + 45 * ((lanes >> 8) & mask) + 2025 * (lanes & mask)
        if summed & (mask << 16):
            raise BadBase45("base45 group exceeds 16 bits")
        raw = summed.to_bytes(width, "big")
        out[0::2] = raw[1::3]
        out[1::2] = raw[2::3]
    if tail:
        last = values[-2] + 45 * values[-1]
        if last > 0xFF:
            raise BadBase45("base45 final group exceeds 8 bits")
        out.append(last)
    return bytes(out)


def b45decode(text: str) -> bytes:
    """Decode RFC 9285 base45 text; raise :class:`BadBase45` if invalid."""
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise BadBase45("character outside the base45 alphabet") from None
    return b45decode_bytes(raw)


def deflate(message: bytes) -> bytes:
    """zlib-compress a COSE message (zlib header, best compression)."""
    return zlib.compress(message, 9)


def inflate(data: bytes, max_size: int = MAX_INFLATED_BYTES) -> bytes:
    """Inflate exactly one zlib stream of at most ``max_size`` bytes; else :class:`BadZlib`."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_size + 1)
    except zlib.error:
        raise BadZlib("not a valid zlib stream") from None
    if len(out) > max_size or inflater.unconsumed_tail:
        raise BadZlib("zlib payload inflates past the size cap")
    if not inflater.eof:
        raise BadZlib("zlib stream is truncated")
    if inflater.unused_data:
        raise BadZlib("data after the end of the zlib stream")
    return out


def wrap(message: bytes) -> str:
    """Put a COSE_Sign1 message into the text envelope: prefix + base45(zlib(message))."""
    return PREFIX + b45encode(deflate(message))


def unwrap(
    code: str | bytes, *, max_length: int = MAX_CODE_LENGTH, max_inflated: int = MAX_INFLATED_BYTES
) -> bytes:
    """Take the COSE_Sign1 message out of a code's text; raise a :class:`CodeRejected` subclass."""
    if isinstance(code, str):
        try:
            raw = code.encode("ascii")
        except UnicodeEncodeError:
            if not code.startswith(PREFIX):
                raise BadPrefix("code does not start with JKM1:") from None
            raise BadBase45("character outside the base45 alphabet") from None
    elif isinstance(code, bytes | bytearray | memoryview):
        raw = bytes(code)
    else:
        raise TypeError("a code is str or bytes")
    if not raw.startswith(_PREFIX_BYTES):
        raise BadPrefix("code does not start with JKM1:")
    if len(raw) > max_length:
        raise BadBase45("code is longer than the accepted maximum")
    return inflate(b45decode_bytes(raw[_PREFIX_LEN:]), max_inflated)
