"""Fixtures of the residents tests: a real vault and server over SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.server.auth.stack import Stack, start_stack


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """Vault + platform server (AuthService, ResidentService) on port 0."""
    async for running in start_stack(database_url, tmp_path):
        yield running
