"""Shared keys and helpers for the health-code tests (deterministic times, fresh P-256 keys)."""

from __future__ import annotations

import pytest

from healthcode.codes import CodeIssuer, CodeVerifier, IssuerKey, KeyRing

NOW = 1_700_000_000
DAY = 86_400
ISSUER = "CN-510400"
NAME = "张*"
MASKED_ID = "5***************12"


@pytest.fixture(scope="session")
def issuer_key() -> IssuerKey:
    return IssuerKey.generate(ISSUER, not_before=NOW - 30 * DAY, not_after=NOW + 30 * DAY)


@pytest.fixture(scope="session")
def list_key() -> IssuerKey:
    return IssuerKey.generate("CN-510400-TL", not_before=NOW - 365 * DAY, not_after=NOW + 365 * DAY)


@pytest.fixture
def issuer(issuer_key: IssuerKey) -> CodeIssuer:
    return CodeIssuer(issuer_key)


@pytest.fixture
def verifier(issuer_key: IssuerKey) -> CodeVerifier:
    return CodeVerifier(KeyRing([issuer_key]))
