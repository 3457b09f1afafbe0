"""Identity numbers, phone numbers and Chinese masking conventions.

- GB 11643-1999 citizen identity numbers: 17 digits + ISO 7064 MOD 11-2 check character.
- Residence permits for Hong Kong, Macau and Taiwan residents (2018) use the same layout with the
  address code 810000 / 820000 / 830000.
- Foreign permanent resident ID cards: the 2017 form (15 characters: 3-letter nationality code,
  4-digit region code, 6-digit birth date YYMMDD, 2-digit serial) and the 2023 form (18 characters
  starting with 9, with the MOD 11-2 check character).
- Mobile numbers: 11 digits starting with 1[3-9], optionally prefixed with +86.

Masking (display only, never a key): ID numbers keep the first and the last two characters
(``5***************12``), mobiles keep 3 + 4 (``139****1234``), names keep the surname (``张*``).
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_PHONE_RE = re.compile(r"^(?:\+?86)?(1[3-9]\d{9})$")
_FOREIGN_2017_RE = re.compile(r"^[A-Z]{3}\d{12}$")

#: GB/T 2260 division codes of Panzhihua (攀枝花市) used by the demo city and by validation.
PANZHIHUA_DIVISIONS: dict[str, str] = {
    "510400": "攀枝花市",
    "510402": "东区",
    "510403": "西区",
    "510411": "仁和区",
    "510421": "米易县",
    "510422": "盐边县",
}

_DIVISION_RE = re.compile(r"^\d{6}$")


class IdKind(StrEnum):
    """Which document an identity number belongs to."""

    RESIDENT = "RESIDENT"
    HMT_PERMIT = "HMT_PERMIT"
    FOREIGN_PERMANENT = "FOREIGN_PERMANENT"


def check_character(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character over the first 17 digits."""
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def _valid_birth(digits: str) -> bool:
    try:
        born = dt.date(int(digits[0:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return False
    return dt.date(1900, 1, 1) <= born <= dt.date.today()


def classify_id_number(value: str) -> IdKind | None:
    """Return the document kind of a well-formed identity number, or None when it is invalid."""
    value = value.strip().upper()
    if len(value) == 15 and _FOREIGN_2017_RE.match(value):
        try:
            dt.datetime.strptime(value[7:13], "%y%m%d")
        except ValueError:
            return None
        return IdKind.FOREIGN_PERMANENT
    if len(value) != 18 or not value[:17].isdigit() or not value[:17].isascii():
        return None
    if check_character(value[:17]) != value[17]:
        return None
    if not _valid_birth(value[6:14]):
        return None
    if value[0] == "9":
        return IdKind.FOREIGN_PERMANENT
    if value[:6] in {"810000", "820000", "830000"}:
        return IdKind.HMT_PERMIT
    if value[0] == "0":
        return None
    return IdKind.RESIDENT


def normalize_id_number(value: str) -> str:
    """Canonical form used for blind indexes and storage: stripped, upper-case ``X``."""
    return value.strip().upper()


def is_valid_id_number(value: str) -> bool:
    """True for any accepted identity number form."""
    return classify_id_number(value) is not None


def normalize_phone(value: str) -> str | None:
    """Return the 11-digit mobile number, or None if ``value`` is not a Chinese mobile number."""
    compact = re.sub(r"[\s-]", "", value)
    match = _PHONE_RE.match(compact)
    return match.group(1) if match else None


def is_valid_division(code: str) -> bool:
    """A six-digit GB/T 2260 division code."""
    return bool(_DIVISION_RE.match(code))


def is_valid_name(value: str) -> bool:
    """Names: 1-64 printable characters, no control characters."""
    stripped = value.strip()
    return 0 < len(stripped) <= 64 and stripped.isprintable()


def mask_id_number(value: str) -> str:
    """``510402199001011234`` -> ``5***************34``."""
    value = normalize_id_number(value)
    if len(value) <= 3:
        return "*" * len(value)
    return value[0] + "*" * (len(value) - 3) + value[-2:]


def mask_phone(value: str) -> str:
    """``13912341234`` -> ``139****1234``."""
    digits = normalize_phone(value) or value
    if len(digits) < 8:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


def mask_name(value: str) -> str:
    """``张三`` -> ``张*``; two-character compound surnames are not guessed."""
    value = value.strip()
    if not value:
        return ""
    return value[0] + "*" * max(1, len(value) - 1)


def mask_address(value: str) -> str:
    """Keep the first six characters (district level), mask the rest."""
    value = value.strip()
    return value[:6] + "*" * max(0, min(len(value) - 6, 8))
