"""Input rules of ResidentService requests; every rule names the proto field path at fault."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from healthcode_sdk._gen.healthcode.v1 import common_pb2
from healthcode_sdk._gen.healthcode.v1 import resident_service_pb2 as pb

from healthcode.common.errors import FieldViolation, InvalidArgument
from healthcode.common.identity import (
    IdKind,
    classify_id_number,
    is_valid_division,
    is_valid_name,
    normalize_id_number,
)
from healthcode.server.common import idempotency

MAX_ADDRESS = 200
MAX_RELATIONSHIP = 16
MAX_REASON = 500
MIN_TEMPERATURE = 34.0
MAX_TEMPERATURE = 43.0
MAX_VISITED = 50
TRAVEL_MAX_AGE = dt.timedelta(days=30)

_KIND_TO_PROTO: dict[IdKind, int] = {
    IdKind.RESIDENT: common_pb2.ID_DOCUMENT_TYPE_RESIDENT,
    IdKind.HMT_PERMIT: common_pb2.ID_DOCUMENT_TYPE_HMT_PERMIT,
    IdKind.FOREIGN_PERMANENT: common_pb2.ID_DOCUMENT_TYPE_FOREIGN_PERMANENT,
}


class Violations:
    """Collects every field violation of one request, then raises them together."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        """Record one violation."""
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        """INVALID_ARGUMENT naming every field at fault."""
        if self.items:
            fields = ", ".join(dict.fromkeys(v.field for v in self.items))
            raise InvalidArgument("INVALID_ARGUMENT", f"invalid {fields}", violations=self.items)


def check_request_id(value: str, errors: Violations) -> None:
    """Optional client request id: 1-64 URL-safe characters."""
    try:
        idempotency.check_request_id(value)
    except InvalidArgument as err:
        errors.items.extend(err.violations)


@dataclass(frozen=True)
class ValidIdentity:
    """A checked identity: normalised ID number, cleaned name and document kind."""

    name: str
    id_number: str
    kind: IdKind


def check_identity(
    identity: pb.PersonIdentity, errors: Violations, prefix: str = "identity"
) -> ValidIdentity | None:
    """Validate name, ID number and (optional) document type."""
    name = " ".join(identity.name.split())
    ok = True
    if not is_valid_name(name):
        errors.add(f"{prefix}.name", "must be 1-64 printable characters")
        ok = False
    number = normalize_id_number(identity.id_number)
    kind = classify_id_number(number) if number else None
    if kind is None:
        errors.add(
            f"{prefix}.id_number",
            "must be an 18-character GB 11643 number with a valid check character, an HK/Macau/"
            "Taiwan residence permit or a foreign permanent resident ID number",
        )
        ok = False
    declared = int(identity.id_type)
    if declared != common_pb2.ID_DOCUMENT_TYPE_UNSPECIFIED:
        if declared not in _KIND_TO_PROTO.values():
            errors.add(f"{prefix}.id_type", "is not a known document type")
            ok = False
        elif kind is not None and _KIND_TO_PROTO[kind] != declared:
            errors.add(f"{prefix}.id_type", "does not match the kind of the ID number")
            ok = False
    if not ok or kind is None:
        return None
    return ValidIdentity(name, number, kind)


def check_division(code: str, field: str, errors: Violations) -> str:
    """A GB/T 2260 division code: six digits, not starting with 0."""
    code = code.strip()
    if not is_valid_division(code) or code.startswith("0"):
        errors.add(field, "must be a six-digit GB/T 2260 division code, e.g. 510402")
    return code


def check_address(value: str, field: str, errors: Violations, *, required: bool) -> str:
    """1-200 printable characters (whitespace collapsed); empty allowed when not required."""
    cleaned = " ".join(value.split())
    if not cleaned:
        if required:
            errors.add(field, f"must be 1-{MAX_ADDRESS} printable characters")
        return ""
    if len(cleaned) > MAX_ADDRESS or not cleaned.isprintable():
        errors.add(field, f"must be 1-{MAX_ADDRESS} printable characters")
    return cleaned


def check_relationship(value: str, errors: Violations) -> str:
    """1-16 printable characters."""
    cleaned = value.strip()
    if not cleaned or len(cleaned) > MAX_RELATIONSHIP or not cleaned.isprintable():
        errors.add("relationship", f"must be 1-{MAX_RELATIONSHIP} printable characters")
    return cleaned


def check_temperature(value: float, errors: Violations) -> float:
    """34.0-43.0 °C."""
    if math.isnan(value) or not MIN_TEMPERATURE <= value <= MAX_TEMPERATURE:
        errors.add(
            "temperature_celsius",
            f"must be between {MIN_TEMPERATURE} and {MAX_TEMPERATURE} degrees Celsius",
        )
    return value


def check_symptoms(values: list[int], errors: Violations) -> list[str]:
    """Known, specified symptoms, deduplicated in first-seen order, as enum names."""
    names: list[str] = []
    for value in values:
        if value == pb.SYMPTOM_UNSPECIFIED or value not in pb.Symptom.values():
            errors.add("symptoms", "must contain only known, specified symptoms")
            return []
        name = pb.Symptom.Name(value)  # type: ignore[arg-type]
        if name not in names:
            names.append(name)
    return names


def check_visited(values: list[str], errors: Violations) -> list[str]:
    """1-50 six-digit division codes, deduplicated."""
    if not values:
        errors.add("visited_division_codes", "must name at least one division")
        return []
    if len(values) > MAX_VISITED:
        errors.add("visited_division_codes", f"must name at most {MAX_VISITED} divisions")
        return []
    codes: list[str] = []
    for i, raw in enumerate(values):
        code = raw.strip()
        if not is_valid_division(code) or code.startswith("0"):
            errors.add(
                f"visited_division_codes[{i}]", "must be a six-digit GB/T 2260 division code"
            )
        elif code not in codes:
            codes.append(code)
    return codes


def check_arrival(
    value: dt.datetime | None, now: dt.datetime, skew: dt.timedelta, errors: Violations
) -> dt.datetime | None:
    """Required, not in the future (beyond clock skew), not older than 30 days."""
    if value is None:
        errors.add("arrive_time", "is required")
        return None
    if value > now + skew:
        errors.add("arrive_time", "must not be in the future")
    elif value < now - TRAVEL_MAX_AGE:
        errors.add("arrive_time", "must not be more than 30 days ago")
    return value


def check_reason(value: str, errors: Violations) -> str:
    """1-500 characters after trimming."""
    cleaned = value.strip()
    if not cleaned or len(cleaned) > MAX_REASON:
        errors.add("reason", f"must be 1-{MAX_REASON} characters")
    return cleaned
