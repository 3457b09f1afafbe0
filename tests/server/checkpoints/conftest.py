"""Fixtures: a real vault and platform server (codes, verification, checkpoints) on port 0, over
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.server.codes.harness import GateStack, start_gate_stack


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[GateStack]:
    """Vault + platform server with CodeService, VerificationService, CheckpointService."""
    async for running in start_gate_stack(database_url, tmp_path):
        yield running
