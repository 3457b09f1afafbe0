"""QR rendering: alphanumeric mode, level Q, and a real decoder (zxing-cpp) reads it back."""

from __future__ import annotations

import io

import pytest
import zxingcpp
from PIL import Image

from healthcode.codes import (
    CodeIssuer,
    CodeKind,
    CodeVerifier,
    Colour,
    is_qr_alphanumeric,
    make_qr,
    render_png,
    render_svg,
)
from tests.codes.conftest import MASKED_ID, NAME, NOW


@pytest.mark.parametrize("kind", list(CodeKind))
def test_png_decodes_with_zxing_and_verifies(
    issuer: CodeIssuer, verifier: CodeVerifier, kind: CodeKind
) -> None:
    issued = issuer.issue(
        colour=Colour.GREEN, kind=kind, masked_name=NAME, masked_id=MASKED_ID, now=NOW
    )
    png = render_png(issued.code, scale=4)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    results = zxingcpp.read_barcodes(image)
    assert len(results) == 1
    assert results[0].format == zxingcpp.BarcodeFormat.QRCode
    assert results[0].text == issued.code
    assert verifier.verify(results[0].text, now=NOW).claims == issued.claims


def test_symbol_uses_alphanumeric_mode_and_level_q(issuer: CodeIssuer) -> None:
    code = issuer.issue(colour=Colour.RED, masked_name=NAME, masked_id=MASKED_ID, now=NOW).code
    qr = make_qr(code)
    assert qr.error == "Q"
    assert qr.mode == "alphanumeric"
    assert qr.designator.endswith("-Q")


def test_svg(issuer: CodeIssuer) -> None:
    code = issuer.issue(colour=Colour.GREEN, masked_name=NAME, masked_id=MASKED_ID, now=NOW).code
    svg = render_svg(code)
    assert svg.startswith("<?xml")
    assert "<svg" in svg
    assert svg.rstrip().endswith("</svg>")


def test_only_alphanumeric_text() -> None:
    assert is_qr_alphanumeric("JKM1:0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./")
    assert not is_qr_alphanumeric("")
    assert not is_qr_alphanumeric("jkm1:")
    with pytest.raises(ValueError, match="alphanumeric"):
        render_png("JKM1:abc")
