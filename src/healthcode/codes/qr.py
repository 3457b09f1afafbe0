"""Rendering codes as QR symbols: alphanumeric mode, error correction Q (DESIGN.md §3).

``JKM1:`` and the base45 alphabet both lie inside the QR alphanumeric set, so the whole code is one
alphanumeric segment (5.5 bits per character rather than 8 in byte mode). ``boost_error=False``
keeps the level at exactly Q, so symbol size does not vary with the code length in surprising ways.
"""

from __future__ import annotations

import io

import segno

#: The QR alphanumeric character set (ISO/IEC 18004 table 5).
QR_ALPHANUMERIC = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")


def is_qr_alphanumeric(text: str) -> bool:
    """Whether every character of ``text`` is in the QR alphanumeric set."""
    return bool(text) and QR_ALPHANUMERIC.issuperset(text)


def make_qr(code: str) -> segno.QRCode:
    """The QR symbol of a code; raise ``ValueError`` if the text is not QR alphanumeric."""
    if not is_qr_alphanumeric(code):
        raise ValueError("a code must consist of QR alphanumeric characters only")
    return segno.make_qr(code, error="q", mode="alphanumeric", boost_error=False)


def render_png(code: str, *, scale: int = 8, border: int = 4) -> bytes:
    """PNG bytes of the code's QR symbol (``scale`` pixels per module, quiet zone ``border``)."""
    buffer = io.BytesIO()
    make_qr(code).save(buffer, kind="png", scale=scale, border=border)
    return buffer.getvalue()


def render_svg(code: str, *, scale: int = 8, border: int = 4) -> str:
    """SVG text (a standalone document) of the code's QR symbol."""
    buffer = io.BytesIO()
    make_qr(code).save(buffer, kind="svg", scale=scale, border=border, xmldecl=True)
    return buffer.getvalue().decode("utf-8")
