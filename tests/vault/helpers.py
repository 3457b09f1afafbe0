"""Test data: valid identity numbers and phone numbers (synthetic, never real people)."""

from __future__ import annotations

from healthcode.common.identity import check_character


def id_number(n: int, region: str = "510402", birth: str = "19900101") -> str:
    """A valid GB 11643 number with serial ``n`` (0-999)."""
    first17 = f"{region}{birth}{n % 1000:03d}"
    return first17 + check_character(first17)


def phone(n: int) -> str:
    """A valid mobile number."""
    return f"139{n:08d}"
