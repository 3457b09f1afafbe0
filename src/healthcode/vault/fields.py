"""Field types, purposes, per-type validation, normalisation and masking, and token format.

Tokens look like ``idn_<26 base32 chars>`` (``phn_``, ``nam_``, ``adr_``): 130 random bits with a
type prefix. They reveal the field type and nothing about the value.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Sequence
from enum import StrEnum

from healthcode.common import identity


class FieldType(StrEnum):
    """The kinds of personal data the vault holds."""

    ID_NUMBER = "ID_NUMBER"
    PHONE = "PHONE"
    NAME = "NAME"
    ADDRESS = "ADDRESS"


class Purpose(StrEnum):
    """The fixed list of purposes for which plaintext may be requested."""

    EPIDEMIOLOGICAL_INVESTIGATION = "EPIDEMIOLOGICAL_INVESTIGATION"
    CORRECTION_REVIEW = "CORRECTION_REVIEW"
    DATA_SUBJECT_REQUEST = "DATA_SUBJECT_REQUEST"
    IDENTITY_VERIFICATION = "IDENTITY_VERIFICATION"
    PROVINCIAL_MUTUAL_RECOGNITION = "PROVINCIAL_MUTUAL_RECOGNITION"


#: Identifier types are unique across subjects and searchable through the blind index.
SEARCHABLE: frozenset[FieldType] = frozenset({FieldType.ID_NUMBER, FieldType.PHONE})

TOKEN_PREFIX: dict[FieldType, str] = {
    FieldType.ID_NUMBER: "idn",
    FieldType.PHONE: "phn",
    FieldType.NAME: "nam",
    FieldType.ADDRESS: "adr",
}
PREFIX_TYPE: dict[str, FieldType] = {v: k for k, v in TOKEN_PREFIX.items()}
_TOKEN_RE = re.compile(r"^(idn|phn|nam|adr)_[a-z2-7]{26}$")
# A newline cannot occur inside a token, so a joined batch matches only if every item does.
_TOKEN_LIST_RE = re.compile(r"(?:(?:idn|phn|nam|adr)_[a-z2-7]{26}\n)*")
_SUBJECT_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_REFERENCE_RE = re.compile(r"^[A-Za-z0-9._:/#-]{0,128}$")
MAX_ADDRESS = 200


class ValueError_(Exception):  # noqa: N801 - not the builtin; a rule violation without the value
    """A value broke its type's rule; ``description`` names the rule, never the value."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def normalize(field_type: FieldType, value: str) -> str:
    """Validate ``value`` for its type and return the canonical form that is stored and indexed."""
    if field_type is FieldType.ID_NUMBER:
        canonical = identity.normalize_id_number(value)
        if not identity.is_valid_id_number(canonical):
            raise ValueError_(
                "must be an 18-character GB 11643 number with a valid check character, an HK/Macau/"
                "Taiwan residence permit or a foreign permanent resident ID number"
            )
        return canonical
    if field_type is FieldType.PHONE:
        phone = identity.normalize_phone(value)
        if phone is None:
            raise ValueError_("must be a Chinese mobile number: 11 digits starting with 13-19")
        return phone
    if field_type is FieldType.NAME:
        if not identity.is_valid_name(value):
            raise ValueError_("must be 1-64 printable characters")
        return " ".join(value.split())
    stripped = " ".join(value.split())
    if not stripped or len(stripped) > MAX_ADDRESS or not stripped.isprintable():
        raise ValueError_(f"must be 1-{MAX_ADDRESS} printable characters")
    return stripped


def mask(field_type: FieldType, canonical: str) -> str:
    """The display form following Chinese convention (``5***************12``, ``139****1234``)."""
    if field_type is FieldType.ID_NUMBER:
        return identity.mask_id_number(canonical)
    if field_type is FieldType.PHONE:
        return identity.mask_phone(canonical)
    if field_type is FieldType.NAME:
        return identity.mask_name(canonical)
    return identity.mask_address(canonical)


def new_token(field_type: FieldType) -> str:
    """A fresh random token for ``field_type``."""
    raw = base64.b32encode(secrets.token_bytes(17)).decode("ascii").lower()[:26]
    return f"{TOKEN_PREFIX[field_type]}_{raw}"


def is_token(token: str) -> bool:
    """True when ``token`` has the token format."""
    return bool(_TOKEN_RE.match(token))


def are_tokens(tokens: Sequence[str]) -> bool:
    """True when every item is a well-formed token (one regex over the whole batch)."""
    return not tokens or _TOKEN_LIST_RE.fullmatch("\n".join(tokens) + "\n") is not None


def token_field_type(token: str) -> FieldType:
    """The field type encoded in a well-formed token's prefix."""
    return PREFIX_TYPE[token[:3]]


def is_subject_id(subject_id: str) -> bool:
    """Subject ids are opaque: 1-128 characters of ``A-Za-z0-9._:-``."""
    return bool(_SUBJECT_RE.match(subject_id))


def is_reference(reference: str) -> bool:
    """Case references: up to 128 characters of ``A-Za-z0-9._:/#-`` (no free text, so no PII)."""
    return bool(_REFERENCE_RE.match(reference))
