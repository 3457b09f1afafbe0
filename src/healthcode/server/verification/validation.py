"""Input rules shared by the verification and checkpoint services."""

from __future__ import annotations

import math
import re

from healthcode_sdk._gen.healthcode.v1 import common_pb2

from healthcode.common.errors import invalid

#: A measured temperature must lie in this range (0 = not measured).
MIN_TEMPERATURE = 30.0
MAX_TEMPERATURE = 45.0
_SCAN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_DIRECTIONS = frozenset({common_pb2.PASSAGE_DIRECTION_ENTRY, common_pb2.PASSAGE_DIRECTION_EXIT})
_ID_METHODS = frozenset(
    {
        common_pb2.PASSAGE_METHOD_ID_MANUAL,
        common_pb2.PASSAGE_METHOD_ID_NFC,
        common_pb2.PASSAGE_METHOD_ID_BLUETOOTH,
        common_pb2.PASSAGE_METHOD_ID_PCSC,
    }
)


def temperature_problem(value: float) -> str | None:
    """Why a temperature is invalid, or None (0 means not measured)."""
    if math.isnan(value) or math.isinf(value):
        return "must be a number"
    if value != 0.0 and not MIN_TEMPERATURE <= value <= MAX_TEMPERATURE:
        return f"must be 0 (not measured) or {MIN_TEMPERATURE}-{MAX_TEMPERATURE} degrees Celsius"
    return None


def check_temperature(value: float, field: str = "temperature_celsius") -> float:
    """A measured temperature or 0; INVALID_ARGUMENT otherwise."""
    problem = temperature_problem(value)
    if problem:
        raise invalid(field, problem)
    return float(value)


def direction_or_none(value: int) -> int | None:
    """ENTRY/EXIT as given, ENTRY for UNSPECIFIED, None for unknown values."""
    if value == common_pb2.PASSAGE_DIRECTION_UNSPECIFIED:
        return common_pb2.PASSAGE_DIRECTION_ENTRY
    return value if value in _DIRECTIONS else None


def check_direction(value: int, field: str = "direction") -> int:
    """ENTRY or EXIT; UNSPECIFIED means ENTRY; anything else is INVALID_ARGUMENT."""
    direction = direction_or_none(value)
    if direction is None:
        raise invalid(field, "must be PASSAGE_DIRECTION_ENTRY or PASSAGE_DIRECTION_EXIT")
    return direction


def id_method_or_none(value: int) -> int | None:
    """An ID-card method; UNSPECIFIED means typed (ID_MANUAL); None for QR or unknown values."""
    if value == common_pb2.PASSAGE_METHOD_UNSPECIFIED:
        return common_pb2.PASSAGE_METHOD_ID_MANUAL
    return value if value in _ID_METHODS else None


def check_id_method(value: int, field: str = "method") -> int:
    """An ID-card reading method; INVALID_ARGUMENT for QR_CODE or unknown values."""
    method = id_method_or_none(value)
    if method is None:
        raise invalid(field, "must be an ID card method (ID_MANUAL, ID_NFC, ID_BLUETOOTH, ID_PCSC)")
    return method


def is_valid_scan_id(value: str) -> bool:
    """1-64 characters of A-Z a-z 0-9 . _ : - (UUIDs fit)."""
    return bool(_SCAN_ID.match(value))


def check_code_text(value: str, field: str = "code") -> str:
    """A non-empty code (the decoder checks the rest, including the length cap)."""
    if not value:
        raise invalid(field, "is required")
    return value
